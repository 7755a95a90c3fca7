// Starts the suite's origin server (server/server.mjs of http-cache-tests) listening on
// 127.0.0.1 only: the suite's server listens on every interface; this binds it to
// loopback before loading it. Usage: node origin.mjs <package dir> <port>
import http from 'http'
import process from 'process'
import { pathToFileURL } from 'url'

const [pkg, port] = process.argv.slice(2)
const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (p, ...rest) {
  return listen.call(this, p, '127.0.0.1', ...rest)
}
process.env.npm_config_protocol = 'http'
process.env.npm_config_port = port
process.env.npm_config_pidfile = `${pkg}/server.pid`
process.chdir(pkg)
await import(pathToFileURL(`${pkg}/server/server.mjs`))
