//! The monitoring configs: the Prometheus alert rules pass `promtool check rules` and their
//! unit tests (`promtool test rules`), and the Grafana dashboard queries only metrics
//! fusegate exports, so that renaming a metric fails here.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Every metric name the dashboard may query (the bucket series of the duration
/// histogram included).
const METRICS: [&str; 14] = [
    "fusegate_requests_total",
    "fusegate_request_duration_seconds_bucket",
    "fusegate_breaker_state",
    "fusegate_breaker_transitions_total",
    "fusegate_rejections_total",
    "fusegate_upstream_failures_total",
    "fusegate_cache_total",
    "fusegate_config_reloads_total",
    "fusegate_config_generation",
    "fusegate_nats_connected",
    "fusegate_client_errors_total",
    "fusegate_connections_open",
    "fusegate_tls_handshakes_total",
    "fusegate_fallbacks_total",
];

/// Runs `promtool <args>` in the crate root and fails, with its output, unless it succeeds.
/// A missing promtool is a failure, never a skip.
fn promtool(args: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(root)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run promtool ({e}): it is needed for the alert rules' tests; \
             `bash scripts/setup.sh` installs it (Debian package prometheus)"
        ),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`promtool {}` failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        args.join(" "),
        out.status
    );
}

#[test]
fn alert_rules_are_valid() {
    promtool(&["check", "rules", "config/prometheus/alerts.yaml"]);
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    promtool(&["test", "rules", "config/prometheus/alerts_test.yaml"]);
}

/// Every `fusegate_[a-z_]+` token of a PromQL expression.
fn metric_names(expr: &str) -> Vec<&str> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(at) = expr[from..].find("fusegate_") {
        let start = from + at;
        let mut end = start + "fusegate_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        names.push(&expr[start..end]);
        from = end;
    }
    names
}

#[test]
fn metric_names_are_extracted_from_expressions() {
    assert_eq!(
        metric_names(
            "sum by (route) (rate(fusegate_requests_total{code=~\"5..\"}[1m])) \
             / histogram_quantile(0.5, fusegate_request_duration_seconds_bucket)"
        ),
        [
            "fusegate_requests_total",
            "fusegate_request_duration_seconds_bucket"
        ]
    );
    assert!(metric_names("up{job=\"gateway\"}").is_empty());
}

#[test]
fn the_dashboard_queries_only_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/fusegate.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).expect("config/grafana/fusegate.json is valid JSON");

    assert_eq!(dashboard["title"], "fusegate", "dashboard title");
    assert_eq!(dashboard["uid"], "fusegate", "dashboard uid");

    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has a `panels` list");
    assert!(!panels.is_empty(), "the dashboard has no panels");

    let known: BTreeSet<&str> = METRICS.into_iter().collect();
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let targets = panel["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?} has no `targets` list"));
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("a target of panel {title:?} has no `expr`"));
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "panel {title:?} queries no fusegate metric: {expr}"
            );
            for name in names {
                assert!(
                    known.contains(name),
                    "panel {title:?} queries {name}, which fusegate does not export: {expr}"
                );
                used.insert(name);
            }
        }
    }
    let route = dashboard["templating"]["list"]
        .as_array()
        .expect("the dashboard has template variables")
        .iter()
        .find(|v| v["name"] == "route")
        .expect("the dashboard has a `route` variable");
    assert_eq!(route["multi"], true, "`route` is multi-value");
    assert_eq!(route["includeAll"], true, "`route` includes All");
    let missing: Vec<&str> = known.difference(&used).copied().collect();
    assert!(missing.is_empty(), "no dashboard panel shows {missing:?}");
}
