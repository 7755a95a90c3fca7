//! The `fusegate` command line.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: fewer cycles per request under load
/// (see the README's Performance section).
#[cfg(not(feature = "alloc-count"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the memory the allocator holds free to the system: after the route table is
/// built at start and after each reload, the one-off work of parsing and building (tens
/// of megabytes with 10,000 routes) would otherwise stay resident until the allocator's
/// next purge, which an idle thread never reaches.
#[cfg(not(feature = "alloc-count"))]
fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time;
    // it only frees what the calling thread's heap holds free and purges unused arena
    // memory.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// The system allocator frees what it can by itself.
#[cfg(feature = "alloc-count")]
fn release_free_memory() {}

/// `--features alloc-count`: the system allocator, counting (`benches/alloc.sh`).
#[cfg(feature = "alloc-count")]
mod alloc_count;
#[cfg(feature = "alloc-count")]
#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting::new();
use fusegate::config::{self, ConfigErrors, DEFAULT_CONFIG_PATH};
use fusegate::server::Gatekeeper;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fusegate",
    version,
    about = "A circuit-breaking reverse-proxy gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve: the proxy on server.listen.
    Run {
        /// Config file (TOML, or YAML by extension).
        #[arg(short = 'c', long = "config", env = "FUSEGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a config: print every problem, exit 0 when there is none, else 1.
    Check {
        /// Config file (TOML, or YAML by extension).
        #[arg(short = 'c', long = "config", env = "FUSEGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Run the gateway with two built-in upstreams on loopback, and print what to try.
    Demo,
    /// Fleet control over NATS: one request to every matching gateway.
    ///
    /// Read actions: ping, info, health, breakers. Write actions: pause, resume, flip,
    /// reset (with an optional route), reload, shutdown, loglevel LEVEL, purge ROUTE.
    Ctl {
        /// NATS server [default: the config's nats.url, else nats://127.0.0.1:4222].
        #[arg(long)]
        nats: Option<String>,
        /// Cluster name [default: the config's nats.cluster, else "default"].
        #[arg(long)]
        cluster: Option<String>,
        /// Only gateways with this fact (key=value); repeatable, all must match.
        #[arg(short = 'W', value_name = "KEY=VALUE")]
        facts: Vec<String>,
        /// Only this gateway identity; repeatable.
        #[arg(short = 'I', value_name = "IDENTITY")]
        identities: Vec<String>,
        /// How long to gather replies.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        /// Print the replies as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        auth: fusegate::control::connect::NatsAuth,
        /// Config file to take defaults from.
        #[arg(short = 'c', long = "config", env = "FUSEGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// `pause --for 10m`: the pause ends by itself then, on every gateway (fleet state).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        for_duration: Option<std::time::Duration>,
        /// Who the fleet state records as having acted [default: the NATS user, else the OS user].
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// The action; also `state` and `history ROUTE` for the fleet state.
        action: String,
        /// The route (pause, resume, flip, reset, purge, history) or the level (loglevel).
        target: Option<String>,
    },
    /// The dashboard page for a whole fleet, fed by the snapshots gateways publish on NATS.
    Dashboard {
        /// NATS server [default: the config's nats.url, else nats://127.0.0.1:4222].
        #[arg(long)]
        nats: Option<String>,
        /// Cluster name [default: the config's nats.cluster, else "default"].
        #[arg(long)]
        cluster: Option<String>,
        /// Where to serve the page (a loopback address).
        #[arg(long, default_value = "127.0.0.1:9191")]
        listen: String,
        /// How long a button's action gathers replies.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: std::time::Duration,
        #[command(flatten)]
        auth: fusegate::control::connect::NatsAuth,
        /// Config file to take defaults from.
        #[arg(short = 'c', long = "config", env = "FUSEGATE_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Show the breaker table of a running gateway, from its admin port.
    Status {
        /// Admin port base URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Bearer token, when the admin port requires one for reads.
        #[arg(long, env = "FUSEGATE_ADMIN__TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the raw JSON of /breakers.
        #[arg(long)]
        json: bool,
        /// Redraw every 2 seconds until interrupted.
        #[arg(long)]
        watch: bool,
    },
}

fn main() -> ExitCode {
    #[cfg(feature = "alloc-count")]
    alloc_count::report_from_env(&ALLOCATOR);
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
        Command::Demo => demo(),
        Command::Ctl {
            nats,
            cluster,
            facts,
            identities,
            timeout,
            json,
            auth,
            config,
            for_duration,
            as_name,
            action,
            target,
        } => {
            let mut parsed = std::collections::BTreeMap::new();
            for f in &facts {
                match f.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        parsed.insert(k.to_string(), v.to_string());
                    }
                    _ => {
                        eprintln!("fusegate ctl: -W takes key=value, got {f:?}");
                        return ExitCode::from(2);
                    }
                }
            }
            let d = NatsDefaults::read(&config, nats, cluster);
            let args = fusegate::ctl::CtlArgs {
                url: d.url,
                cluster: d.cluster,
                facts: parsed,
                identities,
                timeout,
                json,
                auth,
                action,
                target,
                for_duration,
                as_name,
                fleet_state: d.fleet_state,
            };
            ExitCode::from(fusegate::ctl::run(&args))
        }
        Command::Dashboard {
            nats,
            cluster,
            listen,
            timeout,
            auth,
            config,
        } => {
            fusegate::logging::init(
                fusegate::config::LogLevel::Info,
                fusegate::config::LogFormat::Text,
            );
            let d = NatsDefaults::read(&config, nats, cluster);
            let nats = fusegate::ctl::CtlArgs {
                url: d.url,
                cluster: d.cluster,
                facts: Default::default(),
                identities: Vec::new(),
                timeout,
                json: true,
                auth,
                action: String::new(),
                target: None,
                for_duration: None,
                as_name: None,
                fleet_state: d.fleet_state,
            };
            ExitCode::from(fusegate::dashboard::run(
                fusegate::dashboard::DashboardArgs { nats, listen },
            ))
        }
        Command::Status {
            admin,
            token,
            json,
            watch,
        } => ExitCode::from(fusegate::status::run(&fusegate::status::StatusArgs {
            admin,
            token,
            json,
            watch,
            interval: std::time::Duration::from_secs(2),
        })),
    }
}

/// NATS server, cluster and `fleet_state` for `ctl` and `dashboard`: the flags, else the
/// config file's `[nats]` when there is a readable one, else the built-in defaults.
struct NatsDefaults {
    url: String,
    cluster: String,
    fleet_state: bool,
}

impl NatsDefaults {
    fn read(config: &Path, url: Option<String>, cluster: Option<String>) -> Self {
        let from_config = config::load(config, true).ok().and_then(|c| c.nats);
        NatsDefaults {
            url: url
                .or_else(|| from_config.as_ref().map(|n| n.url.clone()))
                .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
            cluster: cluster
                .or_else(|| from_config.as_ref().map(|n| n.cluster.clone()))
                .unwrap_or_else(|| "default".into()),
            fleet_state: from_config.as_ref().is_some_and(|n| n.fleet_state),
        }
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s)
}

fn print_problems(path: &Path, errors: &ConfigErrors) {
    eprintln!("{}: {} problem(s):", path.display(), errors.0.len());
    for p in &errors.0 {
        eprintln!("  {p}");
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path, true) {
        Ok(c) => {
            println!("{}: ok ({} route(s))", path.display(), c.routes.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_problems(path, &e);
            ExitCode::from(1)
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match config::load(path, true) {
        Ok(c) => c,
        Err(e) => {
            print_problems(path, &e);
            return ExitCode::from(1);
        }
    };
    fusegate::logging::init(config.log.level, config.log.format);
    let mut listen = config.server.listen.addrs().join(", ");
    if let Some(tls) = &config.server.tls {
        listen = format!("{listen} and TLS on {}", tls.listen.addrs().join(", "));
    }
    let routes = config.routes.len();
    fusegate::reload::after_each_reload(release_free_memory);
    match Gatekeeper::build(config, Some(path.to_path_buf())) {
        Ok(g) => {
            release_free_memory();
            log::info!(
                "fusegate {} serving {routes} route(s) on {listen} (config {})",
                env!("CARGO_PKG_VERSION"),
                path.display()
            );
            g.run();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fusegate: {e}");
            ExitCode::from(1)
        }
    }
}

fn demo() -> ExitCode {
    let config = fusegate::demo::config();
    for addr in [fusegate::demo::CATALOG_ADDR, fusegate::demo::SEARCH_ADDR] {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            eprintln!("fusegate demo: cannot listen on {addr} for a demo upstream: {e}");
            return ExitCode::from(1);
        }
    }
    fusegate::logging::init(config.log.level, config.log.format);
    let mut g = match Gatekeeper::build(config, None) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("fusegate demo: {e}");
            return ExitCode::from(1);
        }
    };
    for svc in fusegate::demo::upstream_services() {
        g.add_service(svc);
    }
    println!("{}", fusegate::demo::guide());
    g.run();
    ExitCode::SUCCESS
}
