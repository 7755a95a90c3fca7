//! Any request path through the path check and the longest-prefix router.
#![no_main]

use fusegate::router::{check_path, Router};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let mut r = Router::new();
    r.insert("/", 0);
    r.insert("/api/catalog", 1);
    r.insert("/api/catalog/admin", 2);
    r.insert("/api/search", 3);
    if check_path(path).is_ok() {
        // An accepted path has no dot segment, raw or encoded.
        for seg in path.split('/') {
            assert!(seg != "." && seg != "..", "{path:?} was accepted");
            let lower = seg.to_ascii_lowercase();
            assert!(lower != "%2e%2e" && lower != "%2e" && lower != ".%2e" && lower != "%2e.");
        }
    }
    let hit = r.lookup(path).copied();
    if path.starts_with("/api/catalog/admin/") {
        assert_eq!(hit, Some(2));
    }
    assert!(hit.is_some(), "the root route matches everything");
});
