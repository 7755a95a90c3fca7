//! The load and edge benchmark harnesses run: one-second smoke runs on debug builds. The
//! numbers mean nothing here; `bash benches/load.sh` and `bash benches/edge.sh` measure.

use std::process::Command;

#[test]
fn the_load_benchmark_harness_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/benches/load.sh"))
        .args([
            "--debug",
            "--duration",
            "1",
            "--rounds",
            "1",
            "--connections",
            "4",
        ])
        .current_dir(root)
        .output()
        .expect("run benches/load.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load.sh failed:\n{stdout}\n{stderr}");
    for expected in [
        "nginx",
        "bare pingora",
        "fusegate/bare pingora: req/s",
        "fusegate/nginx:",
        "access log on/off:",
        "dashboard on/off:",
        "dashboard client: ",
        "fusegate with 10,000 routes: peak RSS",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn the_edge_benchmark_harness_runs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/benches/edge.sh"))
        .args([
            "--debug",
            "--duration",
            "1",
            "--rounds",
            "1",
            "--handshakes",
            "20",
        ])
        .current_dir(root)
        .output()
        .expect("run benches/edge.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "edge.sh failed:\n{stdout}\n{stderr}");
    for expected in ["new TLS connections", "h2 over TLS", "h2c ("] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
