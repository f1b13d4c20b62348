//! Property tests: random bytes and random mutations of a valid archive never panic, and
//! whatever is reported lies inside the input.

use proptest::prelude::*;

use super::craft::{header, octal, seal, Builder};
use super::*;

/// An archive using every feature the walker decodes.
fn rich_archive() -> Vec<u8> {
    let mut b = Builder::default();
    b.pax(b'g', &[("mtime", b"1700000000.5"), ("comment", b"global")]);
    b.entry("dir/", b'5', b"");
    b.entry("dir/file", b'0', b"some file data");
    b.raw(&header(b"././@LongLink", b'L', 130), &[b'n'; 130]);
    b.raw(&header(b"././@LongLink", b'K', 120), &[b'k'; 120]);
    b.link("short", b'2', "x");
    b.pax(b'x', &[("path", b"pax/name"), ("SCHILY.xattr.user.a", b"v\0\n"), ("uid", b"5")]);
    b.entry("ignored", b'0', &[3u8; 700]);
    b.link("hard", b'1', "dir/file");
    // PAX sparse 1.0.
    b.pax(
        b'x',
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"sp"),
            ("GNU.sparse.realsize", b"9000"),
        ],
    );
    let mut data = b"2\n0\n512\n8000\n10\n".to_vec();
    data.resize(512, 0);
    data.extend([1u8; 512]);
    data.extend([2u8; 10]);
    b.entry("GNUSparseFile/sp", b'0', &data);
    // Old GNU sparse with one extension block.
    let mut h = header(b"oldsparse", b'S', 5 * 512);
    h[257..265].copy_from_slice(b"ustar  \0");
    for i in 0..4 {
        octal(&mut h[386 + 24 * i..398 + 24 * i], i as u64 * 2048);
        octal(&mut h[398 + 24 * i..410 + 24 * i], 512);
    }
    h[482] = 1;
    octal(&mut h[483..495], 20000);
    seal(&mut h);
    let mut ext = [0u8; 512];
    octal(&mut ext[0..12], 10000);
    octal(&mut ext[12..24], 512);
    b.raw(&h, &[]);
    b.out.extend_from_slice(&ext);
    b.out.extend([9u8; 5 * 512]);
    b.entry("last", b'0', b"end");
    b.end()
}

fn small_limits() -> Limits {
    Limits { max_uncompressed: 1 << 20, max_entries: 50, max_header_bytes: 2048, max_path_len: 256 }
}

/// Walks `data`; on success, checks that every reported byte range lies inside it.
fn walk_checked(data: &[u8], limits: &Limits) {
    let Ok(w) = walk_bytes(data, limits) else {
        return;
    };
    assert_eq!(w.consumed, data.len() as u64);
    let len = data.len() as u64;
    for e in &w.entries {
        match &e.data {
            DataLayout::None => {}
            DataLayout::Contiguous { offset } => assert!(offset + e.size <= len, "{e:?}"),
            DataLayout::Sparse(segs) => {
                for s in segs {
                    assert!(s.stream_offset + s.len <= len && s.logical + s.len <= e.size, "{e:?}");
                }
            }
        }
        assert!(e.path.len() <= limits.max_path_len);
    }
}

#[test]
fn rich_archive_walks() {
    let data = rich_archive();
    let w = walk_bytes(&data, &small_limits()).unwrap();
    let paths: Vec<&[u8]> = w.entries.iter().map(|e| e.path.as_slice()).collect();
    let long = vec![b'n'; 130];
    assert_eq!(
        paths,
        [&b"dir"[..], b"dir/file", &long, b"pax/name", b"hard", b"sp", b"oldsparse", b"last"]
    );
    assert!(w.entries.iter().all(|e| (e.mtime, e.mtime_nsec) == (1700000000, 500_000_000)));
    assert_eq!(w.entries[2].link_target.as_deref(), Some(&[b'k'; 120][..]));
    assert_eq!(w.entries[3].xattrs, [(b"user.a".to_vec(), b"v\0\n".to_vec())]);
    let DataLayout::Sparse(segs) = &w.entries[6].data else { panic!() };
    assert_eq!(segs.len(), 5);
    walk_checked(&data, &small_limits());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        walk_checked(&data, &small_limits());
        walk_checked(&data, &Limits::default());
    }

    #[test]
    fn mutated_archives_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
        reseal in any::<bool>(),
    ) {
        let mut data = rich_archive();
        for (at, v) in &edits {
            let i = at.index(data.len());
            data[i] = *v;
        }
        if reseal {
            // Fix the checksum of every block that has one, so edits reach the decoders.
            for o in (0..data.len()).step_by(512) {
                let blk: &mut [u8; 512] = (&mut data[o..o + 512]).try_into().unwrap();
                if blk[257..262] == *b"ustar" {
                    seal(blk);
                }
            }
        }
        if truncate {
            data.truncate(cut.index(data.len()));
        }
        walk_checked(&data, &small_limits());
        walk_checked(&data, &Limits::default());
    }
}
