//! `unwind::table::build_rows`: any bytes as an ELF file. Never panics; a table it builds is
//! sorted, its counters match its rows, and its page layout keeps every rule.
#![no_main]

use kalypso_fuzz::{check_page_layout, check_table_rows};
use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::table::build_rows;
use profiler_common::unwind::{arch, kind};

fuzz_target!(|elf: &[u8]| {
    let mut rows = Vec::new();
    let Ok(info) = build_rows(elf, &mut |row| rows.push(row)) else {
        return;
    };
    check_table_rows(&rows);
    assert!(info.arch == arch::X86_64 || info.arch == arch::AARCH64);
    assert_eq!(info.rows, rows.len() as u64, "{info:?}");
    let unsupported = rows.iter().filter(|r| r.kind == kind::UNSUPPORTED).count();
    assert_eq!(info.unsupported_rows, unsupported as u64, "{info:?}");
    // Equal neighbours are merged.
    for pair in rows.windows(2) {
        let rule = |r: &profiler_common::unwind::UnwindRow| {
            (r.kind, r.cfa_offset, r.fp_offset, r.ra_offset)
        };
        assert_ne!(rule(&pair[0]), rule(&pair[1]), "unmerged rows {pair:?}");
    }
    check_page_layout(&rows, &[]);
});
