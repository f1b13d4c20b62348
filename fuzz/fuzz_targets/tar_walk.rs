#![no_main]
//! Walks arbitrary bytes as a tar stream with small limits: must never panic, and whatever is
//! reported must lie inside the input.

use std::io::BufReader;

use addonfs::archive::{tar, DataLayout};
use addonfs::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_uncompressed: 1 << 24,
        max_entries: 64,
        max_header_bytes: 4096,
        max_path_len: 512,
    };
    // A small buffer, so blocks straddle buffer boundaries.
    let mut input = BufReader::with_capacity(700, data);
    let len = data.len() as u64;
    let result = tar::walk(
        &mut input,
        &limits,
        &mut |e| {
            assert!(e.path.len() <= limits.max_path_len);
            match &e.data {
                DataLayout::None => {}
                DataLayout::Contiguous { offset } => assert!(offset + e.size <= len),
                DataLayout::Sparse(segs) => {
                    for s in segs {
                        assert!(s.stream_offset + s.len <= len);
                        assert!(s.logical + s.len <= e.size);
                    }
                }
            }
            Ok(())
        },
        &mut |_| {},
    );
    if let Ok(consumed) = result {
        assert_eq!(consumed, len);
    }
});
