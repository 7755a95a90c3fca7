//! Any client bytes, split into any reads, through the request-header scan that enforces
//! `server.max_header_bytes` and finds where a header ends: never a panic, and the same
//! answer as a direct reading of the rule however the bytes are split.
#![no_main]

use fusegate::proxy::{reference_scan, scan_pieces};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // [max_bytes seed][split seed][client bytes...]
    let [max_seed, split_seed, bytes @ ..] = data else {
        return;
    };
    let max_bytes = 1 + usize::from(*max_seed) * 4;
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut step = usize::from(*split_seed) | 1;
    while at < bytes.len() {
        let n = 1 + step % (bytes.len() - at);
        pieces.push(&bytes[at..at + n]);
        at += n;
        step = step.wrapping_mul(31).wrapping_add(7);
    }
    assert_eq!(
        scan_pieces(&pieces, max_bytes),
        reference_scan(bytes, max_bytes),
        "{bytes:?} split {:?}, max {max_bytes}",
        pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
    );
});
