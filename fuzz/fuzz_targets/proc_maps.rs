//! `unwind::replay::process_mappings`: any text as `/proc/PID/maps`. Never panics; the mappings
//! it returns are bounded, sorted, and found again by the BPF program's `find_mapping`.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use kalypso_fuzz::elf_with_segments;
use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::replay::{ObjectTable, process_mappings};
use profiler_common::unwind::{MAX_MAPPINGS, find_in};

/// Two objects: a `-z separate-code` one and one whose code shares a page with read-only data.
fn objects() -> &'static [Vec<u8>; 2] {
    static OBJECTS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        const R: u32 = 4;
        const RX: u32 = 5;
        [
            elf_with_segments(&[
                (0, 0, 0x600, R, 0x1000),
                (0x1000, 0x1000, 0x3000, RX, 0x1000),
            ]),
            elf_with_segments(&[(0, 0, 0x5c0, R, 0x1000), (0x5c0, 0x15c0, 0x900, RX, 0x1000)]),
        ]
    })
}

/// Paths whose name has an even length are known objects (so some mappings are left out).
fn object(path: &Path) -> Option<ObjectTable<'static>> {
    let len = path.as_os_str().len();
    (len % 2 == 0).then(|| ObjectTable {
        table_id: len as u32,
        elf: &objects()[len / 2 % 2],
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mappings) = process_mappings(text, object) else {
        return;
    };
    let len = mappings.len as usize;
    assert!(len <= MAX_MAPPINGS);
    let found = &mappings.mappings[..len];
    for pair in found.windows(2) {
        assert!(pair[0].start <= pair[1].start, "not sorted: {pair:?}");
    }
    // The kernel's maps never overlap; where the text's do not either, every mapping is found.
    let disjoint = found.iter().all(|m| m.start < m.end)
        && found.windows(2).all(|pair| pair[0].end <= pair[1].start);
    if disjoint {
        for m in found {
            assert_eq!(find_in(&mappings, m.start), Some(*m));
            assert_eq!(find_in(&mappings, m.end - 1), Some(*m));
        }
    }
});
