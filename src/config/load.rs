//! Loading: the config file (TOML or YAML, by extension) with `FUSEGATE_` environment
//! overrides on top, deserialized so that every problem is reported at once, each with its
//! key path.

use super::problem::{ConfigErrors, ConfigProblem};
use super::types::Config;
use super::validate::validate;
use figment::providers::{Env, Format as _, Serialized, Toml, Yaml};
use figment::value::{Dict, Value};
use figment::Figment;
use std::path::Path;

/// The syntax of a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    /// YAML for `.yaml`/`.yml`, TOML for everything else.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => Format::Yaml,
            _ => Format::Toml,
        }
    }
}

/// Loads and validates the config at `path`, with `FUSEGATE_*` environment variables applied
/// over it when `with_env` is set.
pub fn load(path: &Path, with_env: bool) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigProblem::new(
            "",
            format!("cannot read config file {}: {e}", path.display()),
        )])
    })?;
    load_from_str(&text, Format::from_path(path), with_env)
}

/// Loads and validates a config from its text.
pub fn load_from_str(text: &str, format: Format, with_env: bool) -> Result<Config, ConfigErrors> {
    let mut figment = match format {
        Format::Toml => Figment::from(Toml::string(text)),
        Format::Yaml => Figment::from(Yaml::string(text)),
    };
    if with_env {
        figment = figment.merge(Env::prefixed("FUSEGATE_").ignore(&["config"]).split("__"));
    }
    // Most configs deserialize at once: then the tree is not copied into a dictionary
    // and back, which with 10,000 routes is tens of megabytes and most of a reload's
    // time. One that does not is deserialized again, key by key, to report every problem.
    if let Ok(config) = figment.extract::<Config>() {
        let problems = validate(&config);
        return if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(problems))
        };
    }
    let root: Dict = match figment.extract() {
        Ok(d) => d,
        Err(e) => {
            let problems = e
                .into_iter()
                .map(|e| ConfigProblem::new(e.path.join("."), describe(&e.kind)))
                .collect();
            return Err(ConfigErrors(problems));
        }
    };
    let (config, mut problems) = deserialize_collecting(root);
    if let Some(config) = &config {
        problems.extend(validate(config));
    }
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(ConfigErrors(problems)),
    }
}

/// serde stops at the first error; to report them all, each failing key is recorded and
/// removed, and deserialization is tried again until it succeeds.
fn deserialize_collecting(mut root: Dict) -> (Option<Config>, Vec<ConfigProblem>) {
    let mut problems = Vec::new();
    // Each round removes at least one key, so the loop ends; the bound is a safety net.
    for _ in 0..256 {
        let attempt = Figment::from(Serialized::defaults(&root)).extract::<Config>();
        let err = match attempt {
            Ok(c) => return (Some(c), problems),
            Err(e) => e,
        };
        let mut removed_any = false;
        for e in err {
            let key_path = removable_path(&e.path);
            problems.push(ConfigProblem::new(e.path.join("."), describe(&e.kind)));
            if !key_path.is_empty() && remove_path(&mut root, &key_path) {
                removed_any = true;
            }
        }
        if !removed_any {
            break;
        }
    }
    (None, problems)
}

/// The key to remove for an error at `path`: list elements are not removed one by one
/// (that would renumber their siblings), the whole list is.
fn removable_path(path: &[String]) -> Vec<String> {
    let end = path
        .iter()
        .position(|seg| seg.parse::<usize>().is_ok())
        .unwrap_or(path.len());
    path[..end].to_vec()
}

fn remove_path(root: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => root.remove(last).is_some(),
        [first, rest @ ..] => match root.get_mut(first) {
            Some(Value::Dict(_, inner)) => remove_path(inner, rest),
            _ => false,
        },
    }
}

fn describe(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::UnknownField(_, expected) => {
            format!("unknown key (expected one of: {})", expected.join(", "))
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidValue(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::UnknownVariant(v, expected) => {
            format!(
                "unknown value {v:?} (expected one of: {})",
                expected.join(", ")
            )
        }
        Kind::Message(m) => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::MAX_FALLBACK_BODY;

    fn errors(text: &str) -> Vec<String> {
        match load_from_str(text, Format::Toml, false) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn empty_file_is_a_valid_config_with_defaults() {
        let c = load_from_str("", Format::Toml, false).unwrap();
        assert_eq!(c.server.threads, 2);
        assert!(c.routes.is_empty());
    }

    #[test]
    fn client_limits_and_trusted_proxies_are_checked_with_their_paths() {
        let errs = errors(
            "[server]\nmax_connections = 0\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/40\", \"proxy.internal\"]\n",
        );
        for key in [
            "server.max_connections:",
            "server.trusted_proxies[1]:",
            "server.trusted_proxies[2]:",
        ] {
            assert!(errs.iter().any(|e| e.starts_with(key)), "{key} {errs:?}");
        }
        assert!(!errs
            .iter()
            .any(|e| e.starts_with("server.trusted_proxies[0]")));
    }

    #[test]
    fn recovery_back_off_and_fallback_are_checked_with_their_paths() {
        let big = "x".repeat(MAX_FALLBACK_BODY + 1);
        let errs = errors(&format!(
            r#"
            [defaults.breaker]
            recovery_duration = "2h"
            reset_timeout = "30s"
            reset_timeout_max = "10s"
            [routes.a]
            upstreams = ["127.0.0.1:1"]
            breaker = {{ reset_timeout = "1m", reset_timeout_max = "45s" }}
            fallback = {{ status = 700, body = "{{}}", upstream = "http://127.0.0.1:2" }}
            [routes.b]
            upstreams = ["127.0.0.1:3"]
            fallback = {{ body = "{big}", content_type = "bad\ntype" }}
            [routes.c]
            upstreams = ["127.0.0.1:4"]
            fallback = {{ upstream = "ftp://x" }}
            "#
        ));
        for key in [
            "defaults.breaker.recovery_duration:",
            "defaults.breaker.reset_timeout_max:",
            "routes.a.breaker.reset_timeout_max:",
            "routes.a.fallback.status:",
            "routes.a.fallback.body:",
            "routes.b.fallback.body:",
            "routes.b.fallback.content_type:",
            "routes.c.fallback.upstream:",
        ] {
            assert!(errs.iter().any(|e| e.starts_with(key)), "{key} {errs:?}");
        }
        // 0 turns the back-off off; equal to reset_timeout is allowed; 1h is the most.
        let ok = load_from_str(
            r#"
            [defaults.breaker]
            recovery_duration = "1h"
            reset_timeout_max = "0s"
            [routes.a]
            upstreams = ["127.0.0.1:1"]
            breaker = { reset_timeout = "5s", reset_timeout_max = "5s" }
            fallback = { status = 200, body = '{"results":[]}' }
            [routes.b]
            upstreams = ["127.0.0.1:2"]
            fallback = { upstream = "http://127.0.0.1:3" }
            "#,
            Format::Toml,
            false,
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let errs = errors(
            "[server]\nlisten = \"127.0.0.1:8080\"\nthreadz = 2\n\n[routes.a]\nupstreams=[\"127.0.0.1:1\"]\nbreaker = { volume_treshold = 3 }\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("server.threadz: unknown key")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("routes.a.breaker.volume_treshold: unknown key")),
            "{errs:?}"
        );
    }

    #[test]
    fn type_errors_and_validation_errors_are_reported_together() {
        let errs = errors(
            "[server]\nthreads = \"many\"\n[defaults.breaker]\nrolling_window = \"soon\"\n[routes.b]\nupstreams = []\nbreaker = { volume_threshold = 0 }\n",
        );
        assert!(
            errs.iter().any(|e| e.starts_with("server.threads:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("defaults.breaker.rolling_window:")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("routes.b.upstreams:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e == "routes.b.breaker.volume_threshold: must be >= 1"),
            "{errs:?}"
        );
    }

    #[test]
    fn yaml_is_accepted() {
        let c = load_from_str(
            "routes:\n  catalog:\n    upstreams: [\"127.0.0.1:7001\"]\n",
            Format::Yaml,
            false,
        )
        .unwrap();
        assert_eq!(c.routes["catalog"].upstreams, vec!["127.0.0.1:7001"]);
    }

    #[test]
    fn syntax_errors_are_reported() {
        let errs = errors("[server\nlisten=");
        assert_eq!(errs.len(), 1, "{errs:?}");
    }
}
