//! RFC 9111 mechanics pingora-cache leaves to its user: a response's age at arrival,
//! the header update of a `304`, headers named in `Connection`, and the URIs an unsafe
//! request invalidates. Pure functions over headers and times.

use pingora::http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};

/// A response's age when it arrived (RFC 9111 §4.2.3): the larger of its `Age` and of
/// the time since its `Date` (0 when `Date` is in the future or unreadable).
///
/// `Age` is one delta-seconds value. One that is not (`abc`, `-1`, `1.5`, `7200;x=y`) is
/// invalid, and so is a list: several field lines, or one line with several members,
/// which RFC 9110 §5.3 makes the same thing. A singleton field that arrives as a list was
/// duplicated on the way, and which member is true cannot be known; rather than trust
/// the first (RFC 9111 §5.1's suggestion), the cache takes the safe reading. A response
/// with an invalid `Age` is taken to be stale: `Duration::MAX`.
pub fn initial_age(resp: &ResponseHeader, now: SystemTime) -> Duration {
    let mut lines = resp.headers.get_all(http::header::AGE).iter();
    let age = match (lines.next(), lines.next()) {
        (None, _) => Duration::ZERO,
        (Some(line), None) => match line.to_str().ok().and_then(delta_seconds) {
            Some(secs) => Duration::from_secs(secs),
            None => return Duration::MAX,
        },
        (Some(_), Some(_)) => return Duration::MAX,
    };
    let apparent = http_date(resp, http::header::DATE)
        .and_then(|date| now.duration_since(date).ok())
        .unwrap_or_default();
    age.max(apparent)
}

/// The freshness lifetime an `Expires` gives (RFC 9111 §4.2.1): `Expires - Date`, with
/// the arrival time standing in for a missing `Date`. A malformed `Expires`, or several,
/// mean already expired: `Some(0)`. `None` without `Expires`.
pub fn expires_lifetime(resp: &ResponseHeader, now: SystemTime) -> Option<Duration> {
    let mut all = resp.headers.get_all(http::header::EXPIRES).iter();
    let first = all.next()?;
    if all.next().is_some() {
        return Some(Duration::ZERO);
    }
    let Some(expires) = first.to_str().ok().and_then(parse_http_date) else {
        return Some(Duration::ZERO);
    };
    let date = http_date(resp, http::header::DATE).unwrap_or(now);
    Some(expires.duration_since(date).unwrap_or_default())
}

/// A delta-seconds value (digits only, surrounding whitespace aside); `None` otherwise.
/// Too large a number saturates.
fn delta_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().unwrap_or(u64::MAX))
}

/// The longest heuristic freshness lifetime.
pub const HEURISTIC_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// A heuristic freshness lifetime (RFC 9111 §4.2.2) for a response that states none:
/// a tenth of the time between its `Last-Modified` and its `Date` (the arrival time
/// standing in for a missing `Date`), at most [`HEURISTIC_MAX`]. `None` without a
/// readable `Last-Modified`; zero when it is not in the past.
pub fn heuristic_lifetime(resp: &ResponseHeader, now: SystemTime) -> Option<Duration> {
    let modified = http_date(resp, http::header::LAST_MODIFIED)?;
    let date = http_date(resp, http::header::DATE).unwrap_or(now);
    let since = date.duration_since(modified).unwrap_or_default();
    Some((since / 10).min(HEURISTIC_MAX))
}

/// What `Surrogate-Control` (the Edge Architecture's header for gateways and CDNs, which
/// takes precedence over `Cache-Control` for them) tells this cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Surrogate {
    /// The field is present with at least one directive for this cache.
    pub present: bool,
    pub no_store: bool,
    pub max_age: Option<Duration>,
}

/// The device name fusegate announces upstream in `Surrogate-Capability`; a
/// `Surrogate-Control` directive targeted at it (`max-age=60;fusegate`) is for it.
pub const SURROGATE_DEVICE: &str = "fusegate";

/// The `Surrogate-Capability` request field fusegate sends upstream from a route with a
/// cache.
pub const SURROGATE_CAPABILITY: http::HeaderValue =
    http::HeaderValue::from_static("fusegate=\"Surrogate/1.0\"");

/// Reads `Surrogate-Control`: directives are case-insensitive, `max-age=N` with no space
/// around `=`; a directive targeted at another device (`max-age=60;cdn`) is not for this
/// cache and is ignored, as are unknown ones; one targeted at `fusegate` is.
pub fn surrogate(resp: &ResponseHeader) -> Surrogate {
    let mut out = Surrogate::default();
    for line in resp.headers.get_all("surrogate-control").iter() {
        let Ok(line) = line.to_str() else { continue };
        for directive in line.split(',') {
            let mut directive = directive.trim();
            if let Some((d, target)) = directive.split_once(';') {
                if !target.trim().eq_ignore_ascii_case(SURROGATE_DEVICE) {
                    continue;
                }
                directive = d.trim_end();
            }
            if directive.is_empty() {
                continue;
            }
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (directive, None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("no-store", None) => {
                    out.present = true;
                    out.no_store = true;
                }
                ("max-age", Some(v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                    out.present = true;
                    out.max_age = Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
                }
                _ => {}
            }
        }
    }
    out
}

fn parse_http_date(v: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(v.trim()).ok()
}

fn http_date(resp: &ResponseHeader, name: http::header::HeaderName) -> Option<SystemTime> {
    resp.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
}

/// Fields a `304` never replaces in the stored response: they describe the stored body
/// or the connection, not the resource (RFC 9111 §3.2).
const KEPT_ON_UPDATE: [&str; 13] = [
    "content-length",
    "content-encoding",
    "content-md5",
    "etag",
    "content-range",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-cache",
];

/// The stored header updated with the fields of a `304` (RFC 9111 §3.2, §4.3.4): every
/// field the `304` carries replaces the stored one, except those describing the stored
/// body or the connection (its `ETag` included: the 304 validated the stored one), and
/// those the `304` names in its `Connection`.
pub fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &ResponseHeader,
) -> ResponseHeader {
    let mut merged = stored.clone();
    let listed = connection_listed(not_modified);
    let mut seen: Vec<&http::header::HeaderName> = Vec::new();
    for (name, value) in not_modified.headers.iter() {
        let n = name.as_str();
        if KEPT_ON_UPDATE.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        if seen.contains(&name) {
            let _ = merged.append_header(name.clone(), value.clone());
        } else {
            seen.push(name);
            let _ = merged.insert_header(name.clone(), value.clone());
        }
    }
    merged
}

/// The header names a message's `Connection` field lists, lower-cased (`close` and
/// `keep-alive` are options, not names).
pub fn connection_listed(resp: &ResponseHeader) -> Vec<String> {
    resp.headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| {
            !n.is_empty()
                && !n.eq_ignore_ascii_case("close")
                && !n.eq_ignore_ascii_case("keep-alive")
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

/// Removes the fields a response's `Connection` names (hop-by-hop: neither stored nor
/// forwarded, RFC 9110 §7.6.1). A `101` keeps them: its `Upgrade` is the point.
pub fn strip_connection_listed(resp: &mut ResponseHeader) {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    for name in connection_listed(resp) {
        if name != "upgrade" {
            resp.remove_header(name.as_str());
        }
    }
}

/// Fields whose list members are case-insensitive tokens (RFC 9110 §12.5).
const CASELESS_LISTS: [&str; 3] = ["accept-language", "accept-encoding", "accept-charset"];

/// A request field's value as a list (RFC 9110 §5.3, §5.6.1): its field lines combined,
/// members split on commas outside quoted strings and trimmed, empty members dropped,
/// joined with `", "`; members of `CASELESS_LISTS` fields lower-cased. Member order is
/// kept: it can carry a preference.
pub fn normalised_list<'a>(name: &str, lines: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let caseless = CASELESS_LISTS.contains(&name);
    let mut out = Vec::new();
    for line in lines {
        let (mut quoted, mut escaped, mut start) = (false, false, 0);
        for i in 0..=line.len() {
            if let Some(&b) = line.get(i) {
                if escaped {
                    escaped = false;
                    continue;
                }
                match b {
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    _ => {}
                }
                if b != b',' || quoted {
                    continue;
                }
            }
            let member = line[start..i].trim_ascii();
            start = i + 1;
            if member.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.extend_from_slice(b", ");
            }
            if caseless {
                out.extend(member.iter().map(u8::to_ascii_lowercase));
            } else {
                out.extend_from_slice(member);
            }
        }
    }
    out
}

/// Whether a request method is unsafe (or of unknown safety): its success invalidates
/// stored responses (RFC 9111 §4.4).
pub fn invalidates(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

/// The paths (with query) an unsafe request to `host` that succeeded invalidates: its
/// target, and the `Location` and `Content-Location` of the response when they are on
/// the same host.
pub fn invalidated_paths(req: &RequestHeader, host: &str, resp: &ResponseHeader) -> Vec<String> {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = vec![target.to_string()];
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(value) = resp.headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(path) = same_host_path(value.trim(), host, req.uri.path()) {
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// `reference` resolved against a request to `host` for `base_path`, as a path with
/// query, when it stays on that host.
fn same_host_path(reference: &str, host: &str, base_path: &str) -> Option<String> {
    if reference.is_empty() {
        return None;
    }
    if let Some(rest) = reference
        .strip_prefix("http://")
        .or_else(|| reference.strip_prefix("https://"))
    {
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        return Some(if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        });
    }
    if reference.starts_with("//") || reference.contains("://") {
        return None;
    }
    if reference.starts_with('/') {
        return Some(reference.to_string());
    }
    // A relative reference: beside the request's last segment.
    let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
    Some(format!("{dir}/{reference}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    #[test]
    fn the_age_at_arrival_is_the_larger_of_age_and_the_time_since_date() {
        let now = 1_000_000;
        assert_eq!(
            initial_age(&resp(&[("age", "30")]), at(now)),
            Duration::from_secs(30)
        );
        let old = date(now - 100);
        assert_eq!(
            initial_age(&resp(&[("age", "30"), ("date", &old)]), at(now)),
            Duration::from_secs(100)
        );
        let future = date(now + 100);
        assert_eq!(
            initial_age(&resp(&[("date", &future)]), at(now)),
            Duration::ZERO
        );
        for bad in ["-5", "soon", "1.5", "", "7200;foo=bar"] {
            assert_eq!(
                initial_age(&resp(&[("age", bad)]), at(now)),
                Duration::MAX,
                "{bad}"
            );
        }
        for list in ["0,7200", "7200, 0", "0, 0"] {
            assert_eq!(
                initial_age(&resp(&[("age", list)]), at(now)),
                Duration::MAX,
                "{list}"
            );
        }
        assert_eq!(
            initial_age(&resp(&[("age", " 42 ")]), at(now)),
            Duration::from_secs(42)
        );
        let twice = resp(&[("age", "0"), ("age", "0")]);
        assert_eq!(initial_age(&twice, at(now)), Duration::MAX);
        let huge = resp(&[("age", "99999999999999999999999")]);
        assert_eq!(initial_age(&huge, at(now)), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn the_heuristic_lifetime_is_a_tenth_of_the_time_since_last_modified() {
        let now = 10_000_000;
        let r = |lm: u64, d: Option<u64>| {
            let (lm, d) = (date(lm), d.map(date));
            let mut h = vec![("last-modified", lm.as_str())];
            if let Some(d) = &d {
                h.push(("date", d.as_str()));
            }
            resp(&h)
        };
        let lifetime = |r: &ResponseHeader| heuristic_lifetime(r, at(now));
        assert_eq!(
            lifetime(&r(now - 1000, None)),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            lifetime(&r(now - 5000, Some(now - 1000))),
            Some(Duration::from_secs(400))
        );
        assert_eq!(lifetime(&r(now - 9_000_000, None)), Some(HEURISTIC_MAX));
        assert_eq!(lifetime(&r(now + 50, None)), Some(Duration::ZERO));
        assert_eq!(lifetime(&resp(&[("last-modified", "yesterday")])), None);
        assert_eq!(lifetime(&resp(&[])), None);
    }

    #[test]
    fn expires_counts_from_date_and_a_bad_one_is_already_expired() {
        let now = 1_000_000;
        let (d, e) = (date(now - 3_600), date(now - 3_600 + 600));
        let r = resp(&[("date", &d), ("expires", &e)]);
        assert_eq!(
            expires_lifetime(&r, at(now)),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            expires_lifetime(&resp(&[("expires", "0")]), at(now)),
            Some(Duration::ZERO)
        );
        let twice = resp(&[("expires", &e), ("expires", &e)]);
        assert_eq!(expires_lifetime(&twice, at(now)), Some(Duration::ZERO));
        assert_eq!(expires_lifetime(&resp(&[]), at(now)), None);
    }

    #[test]
    fn a_304_updates_every_field_but_those_of_the_body_and_connection() {
        let stored = resp(&[
            ("content-type", "text/plain"),
            ("etag", "\"a\""),
            ("content-length", "10"),
            ("x-old", "1"),
        ]);
        let nm = resp(&[
            ("content-type", "text/html"),
            ("etag", "\"b\""),
            ("content-length", "0"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("x-new", "2"),
        ]);
        let m = merge_not_modified(&stored, &nm);
        let get = |n: &str| {
            m.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        assert_eq!(get("content-type").as_deref(), Some("text/html"));
        assert_eq!(get("etag").as_deref(), Some("\"a\""));
        assert_eq!(get("content-length").as_deref(), Some("10"));
        assert_eq!(get("x-old").as_deref(), Some("1"));
        assert_eq!(get("x-new").as_deref(), Some("2"));
        assert_eq!(get("x-hop"), None);
    }

    #[test]
    fn list_fields_are_normalised_for_variance() {
        let norm = |name: &str, lines: &[&str]| {
            String::from_utf8(normalised_list(name, lines.iter().map(|l| l.as_bytes()))).unwrap()
        };
        assert_eq!(norm("foo", &["1, 2"]), "1, 2");
        assert_eq!(norm("foo", &["1", "2"]), "1, 2");
        assert_eq!(norm("foo", &["1,2"]), "1, 2");
        assert_eq!(norm("foo", &[" 1 ,,  2 "]), "1, 2");
        assert_eq!(norm("foo", &["A"]), "A", "case kept for unknown fields");
        assert_eq!(norm("accept-language", &[" eN ,   De"]), "en, de");
        assert_eq!(norm("accept-language", &["de, en"]), "de, en", "order kept");
        assert_eq!(
            norm("foo", &["\"a,b\", c"]),
            "\"a,b\", c",
            "no split inside quotes"
        );
        assert_eq!(
            norm("foo", &["\"a\\\",b\",c"]),
            "\"a\\\",b\", c",
            "escaped quote"
        );
        assert_eq!(norm("foo", &[]), "");
    }

    #[test]
    fn surrogate_control_directives_for_this_cache() {
        let s = surrogate(&resp(&[("surrogate-control", "foobar, MaX-aGe=3600")]));
        assert_eq!(
            (s.present, s.max_age),
            (true, Some(Duration::from_secs(3600)))
        );
        let s = surrogate(&resp(&[("surrogate-control", "no-store")]));
        assert!(s.present && s.no_store);
        let mine = surrogate(&resp(&[("surrogate-control", "max-age=10;FuseGate")]));
        assert_eq!(mine.max_age, Some(Duration::from_secs(10)));
        for ignored in [
            "max-age=3600;cdn",
            "max-age =100",
            "max-age= 100",
            "max-age=1.5",
        ] {
            let s = surrogate(&resp(&[("surrogate-control", ignored)]));
            assert_eq!(s, Surrogate::default(), "{ignored}");
        }
        let big = surrogate(&resp(&[(
            "surrogate-control",
            "max-age=99999999999999999999",
        )]));
        assert_eq!(big.max_age, Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn fields_named_in_connection_are_removed_except_from_a_101() {
        let mut r = resp(&[
            ("connection", "close, X-Hop"),
            ("x-hop", "1"),
            ("x-keep", "2"),
        ]);
        strip_connection_listed(&mut r);
        assert!(r.headers.get("x-hop").is_none());
        assert!(r.headers.get("x-keep").is_some());
        let mut up = resp(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        up.set_status(101).unwrap();
        strip_connection_listed(&mut up);
        assert!(up.headers.get("upgrade").is_some());
    }

    #[test]
    fn an_unsafe_request_invalidates_its_target_and_same_host_locations() {
        let req = RequestHeader::build("POST", b"/api/items/1?x=1", None).unwrap();
        let r = resp(&[
            ("location", "http://gw.example/api/items/2"),
            ("content-location", "3"),
        ]);
        assert_eq!(
            invalidated_paths(&req, "gw.example", &r),
            ["/api/items/1?x=1", "/api/items/2", "/api/items/3"]
        );
        let other = resp(&[("location", "http://elsewhere/api/items/2")]);
        assert_eq!(
            invalidated_paths(&req, "gw.example", &other),
            ["/api/items/1?x=1"]
        );
        assert!(invalidates(&http::Method::POST));
        assert!(invalidates(&http::Method::from_bytes(b"M-SEARCH").unwrap()));
        assert!(!invalidates(&http::Method::GET) && !invalidates(&http::Method::OPTIONS));
    }
}
