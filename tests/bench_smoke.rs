//! The load and edge benchmark harnesses run: one-second smoke runs on debug builds. The
//! numbers mean nothing here; `bash benches/load.sh` and `bash benches/edge.sh` measure.

use std::process::Command;

/// Runs `benches/<script>` with `args` and checks that it succeeds and prints each of
/// `expected`.
fn smoke_run(script: &str, args: &[&str], expected: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/benches/{script}"))
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| panic!("run benches/{script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    for expected in expected {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn the_load_benchmark_harness_runs() {
    smoke_run(
        "load.sh",
        &[
            "--debug",
            "--duration",
            "1",
            "--rounds",
            "1",
            "--connections",
            "4",
        ],
        &[
            "nginx",
            "bare pingora",
            "bare pingora 0.9.1",
            "fusegate on pingora 0.9.1",
            "fusegate/bare pingora, both patched: req/s",
            "fusegate/bare pingora 0.9.1: req/s",
            "pingora patches on/off, fusegate: req/s",
            "fusegate/nginx:",
            "access log on/off:",
            "dashboard on/off:",
            "dashboard client: ",
            "fusegate with 10,000 routes: RSS ",
            "MiB once started, peak ",
            "fusegate with 10,000 routes: reload ",
            "generations ",
        ],
    );
}

#[test]
fn the_edge_benchmark_harness_runs() {
    smoke_run(
        "edge.sh",
        &[
            "--debug",
            "--duration",
            "1",
            "--rounds",
            "1",
            "--handshakes",
            "20",
        ],
        &["new TLS connections", "h2 over TLS", "h2c ("],
    );
}
