//! `fusegate status`: the breaker table of a running gateway, read from its admin port.

use serde_json::Value;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

/// What `fusegate status` was asked for.
#[derive(Debug, Clone)]
pub struct StatusArgs {
    /// Base URL of the admin port, e.g. `http://127.0.0.1:9090`.
    pub admin: String,
    pub token: Option<String>,
    pub json: bool,
    /// Redraw every `interval` until interrupted.
    pub watch: bool,
    pub interval: Duration,
}

/// Fetches `/breakers`.
pub fn fetch(admin: &str, token: Option<&str>) -> Result<Value, String> {
    let url = format!("{}/breakers", admin.trim_end_matches('/'));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let mut req = agent.get(&url);
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let body = r.into_string().unwrap_or_default();
            return Err(format!("{url}: HTTP {code}: {body}"));
        }
        Err(e) => return Err(format!("{url}: {e}")),
    };
    let text = resp
        .into_string()
        .map_err(|e| format!("{url}: reading the answer: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{url}: not JSON ({e})"))
}

/// Renders the breaker table; with `color`, states are coloured for a terminal.
pub fn render(breakers: &Value, color: bool) -> String {
    let rows: Vec<[String; 6]> = breakers["breakers"]
        .as_array()
        .map(|list| list.iter().map(row).collect())
        .unwrap_or_default();
    let headers = ["ROUTE", "STATE", "FAIL%", "WINDOW", "REJECTED", "UPSTREAMS"];
    let mut widths = headers.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String; 6], state_color: Option<&str>| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let padded = if (2..=4).contains(&i) {
                format!("{cell:>w$}")
            } else {
                format!("{cell:<w$}")
            };
            match (i, state_color) {
                (1, Some(c)) => {
                    let _ = write!(out, "\x1b[{c}m{padded}\x1b[0m");
                }
                _ => out.push_str(&padded),
            }
            if i < 5 {
                out.push_str("  ");
            }
        }
        out.push('\n');
    };
    line(&mut out, &headers.map(String::from), None);
    for r in &rows {
        let state = r[1].split(' ').next().unwrap_or("");
        let c = color.then_some(match state {
            "closed" => "32",
            "open" => "31",
            "half_open" => "33",
            "recovering" => "36",
            _ => "35",
        });
        line(&mut out, r, c);
    }
    if rows.is_empty() {
        out.push_str("(no routes)\n");
    }
    out
}

fn row(b: &Value) -> [String; 6] {
    let upstreams = b["upstreams"].as_array().cloned().unwrap_or_default();
    let healthy = upstreams.iter().filter(|u| u["healthy"] == true).count();
    let mut state = b["state"].as_str().unwrap_or("?").to_string();
    if let Some(pct) = b["admit_percentage"].as_f64() {
        let _ = write!(state, " {pct:.0}%");
    }
    if b["mode"] == "observe" {
        state.push_str(" (observe)");
    }
    [
        b["route"].as_str().unwrap_or("?").to_string(),
        state,
        format!(
            "{:.1}",
            b["window"]["failure_percentage"].as_f64().unwrap_or(0.0)
        ),
        format!(
            "{}/{}",
            b["window"]["failures"].as_u64().unwrap_or(0),
            b["window"]["total"].as_u64().unwrap_or(0)
        ),
        b["rejected_total"].as_u64().unwrap_or(0).to_string(),
        format!("{healthy}/{} healthy", upstreams.len()),
    ]
}

/// Runs the command; returns the process exit code.
pub fn run(args: &StatusArgs) -> u8 {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    loop {
        match fetch(&args.admin, args.token.as_deref()) {
            Ok(v) if args.json => println!("{v}"),
            Ok(v) => {
                if args.watch && color {
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&v, color));
            }
            Err(e) => {
                eprintln!("fusegate status: {e}");
                if !args.watch {
                    return 1;
                }
            }
        }
        if !args.watch {
            return 0;
        }
        std::thread::sleep(args.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_aligned_row_per_route() {
        let v = serde_json::json!({"breakers": [
            {"route": "catalog", "state": "closed", "mode": "enforce", "rejected_total": 0,
             "window": {"total": 12, "failures": 1, "failure_percentage": 8.3},
             "upstreams": [{"addr": "a", "healthy": true}, {"addr": "b", "healthy": false}]},
            {"route": "search", "state": "open", "mode": "observe", "rejected_total": 15,
             "window": {"total": 10, "failures": 5, "failure_percentage": 50.0},
             "upstreams": [{"addr": "c", "healthy": true}]},
            {"route": "tags", "state": "recovering", "mode": "enforce", "rejected_total": 3,
             "admit_percentage": 42.4,
             "window": {"total": 4, "failures": 0, "failure_percentage": 0.0},
             "upstreams": [{"addr": "d", "healthy": true}]}
        ]});
        let text = render(&v, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("ROUTE"));
        assert!(lines[1].contains("catalog") && lines[1].contains("1/2 healthy"));
        assert!(lines[2].contains("open (observe)") && lines[2].contains("50.0"));
        assert!(lines[3].contains("recovering 42%"));
        assert!(!text.contains('\x1b'));
        assert!(render(&v, true).contains("\x1b[31m"));
    }
}
