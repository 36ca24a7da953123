//! `unwind::cache`: any bytes as an on-disk table file, opened through `TableCache::get`. Never
//! panics; a file it accepts holds a table the loader can use as it is (sorted rows of known
//! kinds, counters that match).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kalypso_fuzz::{check_page_layout, check_table_rows};
use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::cache::TableCache;
use profiler_common::unwind::arch;

const KEY: &str = "0123456789abcdef";

/// The cache and the path of `KEY`'s file in it (under TMPDIR; `cargo xtask fuzz` points that
/// into target/).
fn cache() -> &'static (TableCache, PathBuf) {
    static CACHE: OnceLock<(TableCache, PathBuf)> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kalypso-fuzz-cache-{}", std::process::id()));
        let cache = TableCache::new(dir, u64::MAX).expect("a cache directory in TMPDIR");
        let path = cache.path(KEY).expect("a valid key");
        (cache, path)
    })
}

fuzz_target!(|file: &[u8]| {
    let (cache, path) = cache();
    // Written in place: no mapping of the previous input is alive any more.
    std::fs::write(path, file).expect("writing the table file");
    let Some(table) = cache.get(KEY) else {
        return;
    };
    let rows = table.rows();
    check_table_rows(rows);
    assert!(table.arch() == arch::X86_64 || table.arch() == arch::AARCH64);
    assert_eq!(table.info().rows, rows.len() as u64);
    assert_eq!(table.info().arch, table.arch());
    check_page_layout(rows, &[]);
});
