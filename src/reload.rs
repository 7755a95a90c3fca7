//! Hot reload (SPEC §9): validate the whole new config, build a new route table next to the
//! old one, swap it in atomically.
//!
//! Requests in flight keep the table they started with (they hold an `Arc` of their
//! route). Breakers live in the registry by route name, so state, window and pause carry
//! over; new settings apply from the next decision. Listener addresses and worker threads
//! cannot change without a restart: a reload keeps the running ones and says so.
//!
//! Triggers: the watched config file ([`FileWatch`]), SIGHUP ([`SignalReload`]),
//! `POST /reload` on the admin port.

use crate::config::{self, Config};
use crate::gateway::{ControlEvent, Gateway, ReloadStatus};
use crate::runtime::Runtime;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub generation: u64,
    /// Keys whose change needs a restart; the running values were kept.
    pub restart_required: Vec<&'static str>,
}

/// Serialises reloads: two triggers at once apply one after the other.
static RELOAD_LOCK: Mutex<()> = Mutex::new(());

/// A reload asked of the reload thread, with where its outcome goes.
type Job = (
    Arc<Gateway>,
    &'static str,
    mpsc::SyncSender<Result<Reloaded, String>>,
);

/// Every reload runs on one long-lived thread. What a reload allocates (the parsed
/// config, the new route table) then comes from one thread's share of the allocator,
/// which the next reload reuses once the table before is dropped; spread over pool
/// threads that go idle, each reload's memory stayed with its thread, and with 10,000
/// routes the process grew by tens of megabytes per reload.
fn reload_thread() -> &'static Mutex<mpsc::Sender<Job>> {
    static THREAD: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    THREAD.get_or_init(|| {
        let (jobs, next) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("fusegate-reload".into())
            .spawn(move || {
                for (gw, trigger, done) in next {
                    let _ = done.send(reload_here(&gw, trigger));
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the reload thread: {e}");
        }
        Mutex::new(jobs)
    })
}

/// Reloads the config file the gateway was started with (on the reload thread; this
/// waits for the outcome).
pub fn reload(gw: &Arc<Gateway>, trigger: &'static str) -> Result<Reloaded, String> {
    let (done, outcome) = mpsc::sync_channel(1);
    let sent = reload_thread()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((gw.clone(), trigger, done));
    match sent {
        Ok(()) => outcome
            .recv()
            .unwrap_or_else(|_| Err("the reload thread stopped".into())),
        // No reload thread: reload here.
        Err(_) => reload_here(gw, trigger),
    }
}

/// What hands the memory a reload freed back to the system (set by the binary, which
/// owns the allocator).
static RELEASE_MEMORY: OnceLock<fn()> = OnceLock::new();

/// Sets what runs on the reload thread after each reload, once the table before is
/// dropped (if no request still holds it): the binary's way to return freed memory.
pub fn after_each_reload(release_memory: fn()) {
    let _ = RELEASE_MEMORY.set(release_memory);
}

fn reload_here(gw: &Gateway, trigger: &str) -> Result<Reloaded, String> {
    let _one_at_a_time = RELOAD_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let result = match &gw.config_path {
        Some(path) => try_reload(gw, path),
        None => Err("this gateway was started without a config file".to_string()),
    };
    if let Some(release) = RELEASE_MEMORY.get() {
        release();
    }
    let status = ReloadStatus {
        ok: result.is_ok(),
        at: SystemTime::now(),
        error: result.as_ref().err().cloned(),
    };
    gw.last_reload.store(Arc::new(Some(status)));
    gw.publish(ControlEvent::Config(serde_json::json!({
        "identity": gw.identity,
        "ok": result.is_ok(),
        "generation": result.as_ref().map(|r| r.generation).unwrap_or(gw.runtime().generation),
        "error": result.as_ref().err(),
    })));
    match &result {
        Ok(r) => {
            gw.metrics.config_reloads.with_label_values(&["ok"]).inc();
            gw.metrics.config_generation.set(r.generation as i64);
            log::info!("config reloaded ({trigger}): generation {}", r.generation);
            if !r.restart_required.is_empty() {
                log::warn!(
                    "config reload kept the running {}: a restart is needed to change them",
                    r.restart_required.join(", ")
                );
            }
        }
        Err(e) => {
            gw.metrics
                .config_reloads
                .with_label_values(&["error"])
                .inc();
            log::error!(
                "config reload ({trigger}) failed, the previous config stays in force: {e}"
            );
        }
    }
    result
}

fn try_reload(gw: &Gateway, path: &Path) -> Result<Reloaded, String> {
    let mut new = config::load(path, true).map_err(|e| {
        e.0.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let current = gw.runtime();
    let restart_required = keep_running_listeners(&current.config, &mut new);
    let generation = current.generation + 1;
    let next = Runtime::build(Arc::new(new), &gw.registries, generation, gw.clock.now_ms())?;
    let (access_log, otel) = crate::gateway::observers(&next.config, Some(gw), &gw.metrics)?;
    gw.access_log.store(access_log);
    // A replaced exporter flushes what it holds as its last user lets go (on a thread
    // of its own).
    gw.otel.store(otel);
    log::set_max_level(next.config.log.level.as_filter());
    for old in &current.routes {
        if next.route(&old.name).is_none() {
            gw.metrics.forget_route(&old.name);
        }
    }
    gw.registries.retain_for(&next);
    gw.swap_runtime(next);
    Ok(Reloaded {
        generation,
        restart_required,
    })
}

/// Puts the running listener settings back into `new`; returns the keys that differed.
fn keep_running_listeners(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if new.server.listen != running.server.listen {
        changed.push("server.listen");
        new.server.listen = running.server.listen.clone();
    }
    if new.server.threads != running.server.threads {
        changed.push("server.threads");
        new.server.threads = running.server.threads;
    }
    // TLS listeners: the running ones stay, and with them a `[server.tls]` section (the
    // certificates are re-read); one added or removed waits for a restart.
    match (&running.server.tls, &mut new.server.tls) {
        (Some(run), Some(next)) if next.listen != run.listen => {
            changed.push("server.tls.listen");
            next.listen = run.listen.clone();
        }
        (Some(_), Some(_)) | (None, None) => {}
        (run, next) => {
            changed.push("server.tls");
            *next = run.clone();
        }
    }
    if new.admin.listen != running.admin.listen {
        changed.push("admin.listen");
        new.admin.listen = running.admin.listen.clone();
    }
    changed
}

/// How often the watched file is looked at.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// Watches the config file by path (so an editor's write-to-temp-and-rename is seen) and
/// reloads once a change has settled for one interval.
pub struct FileWatch {
    pub gateway: Arc<Gateway>,
    pub path: PathBuf,
}

/// What identifies a version of the file: modification time, size, inode.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

#[async_trait]
impl BackgroundService for FileWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut applied = fingerprint(&self.path);
        let mut pending: Option<Option<(SystemTime, u64, u64)>> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                _ = shutdown.changed() => return,
            }
            let now = fingerprint(&self.path);
            match pending {
                // A change seen last time and unchanged since: it has settled.
                Some(seen) if seen == now => {
                    pending = None;
                    if now != applied {
                        applied = now;
                        if now.is_some() {
                            let gw = self.gateway.clone();
                            let _ = tokio::task::spawn_blocking(move || reload(&gw, "file change"))
                                .await;
                        }
                    }
                }
                _ if now != applied => pending = Some(now),
                _ => pending = None,
            }
        }
    }
}

/// Reloads on SIGHUP; reopens the access log's file on SIGUSR1.
pub struct SignalReload {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for SignalReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut hup, mut usr1) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(h), Ok(u)) => (h, u),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot listen for SIGHUP and SIGUSR1: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let gw = self.gateway.clone();
                    let _ = tokio::task::spawn_blocking(move || reload(&gw, "SIGHUP")).await;
                }
                got = usr1.recv() => {
                    if got.is_none() {
                        return;
                    }
                    match self.gateway.access_log.load().as_ref() {
                        Some(access_log) => access_log.reopen(),
                        None => log::info!("SIGUSR1: no access log to reopen"),
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
