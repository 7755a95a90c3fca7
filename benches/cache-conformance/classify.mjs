// Classifies an http-cache-tests result file the way the suite's own display does
// (lib/display.mjs determineTestResult), and prints the counts as one JSON line.
import { pathToFileURL } from 'url'
import { readFileSync } from 'fs'
const [pkg, resultsFile] = process.argv.slice(2)
const tests = (await import(pathToFileURL(`${pkg}/tests/index.mjs`))).default
const surrogate = (await import(pathToFileURL(`${pkg}/tests/surrogate-control.mjs`))).default
tests.push(surrogate)
const results = JSON.parse(readFileSync(resultsFile, 'utf8'))
const byId = new Map()
for (const suite of tests) for (const t of suite.tests) byId.set(t.id, t)
const PASS = new Set(['pass', 'yes'])
function kind (id, deps = true) {
  const test = byId.get(id)
  const result = results[id]
  if (result === undefined) return 'untested'
  if (deps && test.depends_on !== undefined) {
    for (const d of test.depends_on) if (!PASS.has(kind(d))) return 'dependency_fail'
  }
  if (result[0] === 'Setup') return result[1] === 'retry' ? 'retry' : 'setup_fail'
  if (result === false && result[0] !== 'Assertion') return 'harness_fail'
  if (test.kind === 'required' || test.kind === undefined) return result === true ? 'pass' : 'fail'
  if (test.kind === 'optimal') return result === true ? 'pass' : 'optional_fail'
  if (test.kind === 'check') return result === true ? 'yes' : 'no'
  throw new Error(`unknown kind ${test.kind}`)
}
const counts = {}
const failed = { fail: [], optional_fail: [], setup_fail: [], dependency_fail: [] }
for (const id of byId.keys()) {
  const k = kind(id)
  counts[k] = (counts[k] || 0) + 1
  if (failed[k]) failed[k].push(id)
}
console.log(JSON.stringify({ counts, failed }))
