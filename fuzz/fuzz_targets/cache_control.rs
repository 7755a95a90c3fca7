//! Any Cache-Control (request and response), Expires, Vary, Age, Date, Last-Modified,
//! Connection and Location values through the cache policy: client directives, client
//! bounds, storage decisions (age at arrival, Expires - Date, the heuristic lifetime),
//! variance, the update of a 304, the fields named in Connection, and the URIs an unsafe
//! request invalidates.
#![no_main]

use fusegate::cache::{
    cacheability, client_decision, rfc, variance, ClientDirectives, Credentials, RouteCache,
};
use libfuzzer_sys::fuzz_target;
use pingora::http::{RequestHeader, ResponseHeader};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

fn route_cache() -> &'static RouteCache {
    // Both live in statics: storages are 'static by design, and the registry must stay
    // reachable so the leak checker does not report it.
    static REGISTRY: OnceLock<fusegate::cache::CacheRegistry> = OnceLock::new();
    static RC: OnceLock<RouteCache> = OnceLock::new();
    RC.get_or_init(|| {
        let cfg = fusegate::config::CacheConfig {
            min_age: fusegate::config::Dur::from_secs(5),
            max_fresh: fusegate::config::Dur::from_secs(10),
            ..Default::default()
        };
        REGISTRY
            .get_or_init(Default::default)
            .route_cache("fuzz", &cfg)
            .expect("enabled cache")
    })
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.splitn(6, |b| *b == b'\n').collect();
    let get = |i: usize| parts.get(i).copied().unwrap_or(b"");
    let mut req = RequestHeader::build("GET", b"/x", None).expect("request");
    if req.insert_header("cache-control", get(0)).is_err() {
        return;
    }
    let _ = req.insert_header("accept", get(3));
    let client = ClientDirectives::from_request(&req);
    let rc = route_cache();
    for (age, fresh) in [
        (0, 0),
        (3, 100),
        (100, 0),
        (u32::MAX as u64, u32::MAX as u64),
    ] {
        let _ = client_decision(
            &client,
            rc,
            Duration::from_secs(age),
            Duration::from_secs(fresh),
        );
    }
    let mut resp = ResponseHeader::build(200, None).expect("response");
    if resp.insert_header("cache-control", get(1)).is_err()
        || resp.insert_header("expires", get(2)).is_err()
        || resp.insert_header("vary", get(3)).is_err()
    {
        return;
    }
    // Age, Date, Last-Modified, Connection and Location are optional: a value the header
    // map refuses is simply left out.
    let _ = resp.insert_header("age", get(4));
    let _ = resp.insert_header("date", get(5));
    let _ = resp.insert_header("last-modified", get(2));
    let _ = resp.insert_header("connection", get(3));
    let _ = resp.insert_header("location", get(5));
    let now = SystemTime::now();
    if let Ok(meta) = cacheability(rc, &client, Credentials::default(), &resp, now) {
        let _ = variance(&meta, &req);
    }
    let _ = rfc::initial_age(&resp, now);
    let _ = rfc::expires_lifetime(&resp, now);
    let _ = rfc::heuristic_lifetime(&resp, now);
    let merged = rfc::merge_not_modified(&resp, &resp);
    let _ = cacheability(rc, &client, Credentials::default(), &merged, now);
    let post = RequestHeader::build("POST", b"/x/y", None).expect("request");
    let host = String::from_utf8_lossy(get(4));
    let _ = rfc::invalidated_paths(&post, &host, &resp);
    rfc::strip_connection_listed(&mut resp);
});
