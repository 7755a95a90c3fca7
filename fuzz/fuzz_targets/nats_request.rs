//! Any bytes as a control-plane request: decoded or refused, never a panic.
#![no_main]

use fusegate::control::{is_read, Request};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        let _ = is_read(&req.action);
        let facts: BTreeMap<String, String> = [("dc".to_string(), "DC1".to_string())].into();
        let _ = req.filter.matches("gw-1", &facts);
        let _ = serde_json::to_vec(&req);
    }
});
