//! `gopclntab::Table` on any bytes as a Go function table. Never panics; every function it
//! decodes lies inside the table's text range, is found again by address, and has stack-pointer
//! delta ranges that are non-empty, ascending and inside the function.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler_agent::gopclntab::{Layout, Table};

/// Functions looked at per input, so a table claiming millions stays fast.
const MAX_FUNCS: u64 = 512;

fuzz_target!(|data: &[u8]| {
    let Ok(mut table) = Table::open(data, Layout::whole(data.len() as u64)) else {
        return;
    };
    let Some((start, end)) = table.text_range() else {
        return;
    };
    for i in 0..table.len().min(MAX_FUNCS) {
        let Some(f) = table.func(i) else {
            continue;
        };
        assert!(f.entry <= f.end, "{f:?}");
        if f.entry == f.end {
            continue;
        }
        assert!(
            f.entry >= start && f.end <= end,
            "{f:?} outside {start:#x}..{end:#x}"
        );
        let found = table
            .find(f.entry)
            .expect("a decoded function is found by its entry");
        // Even in an unsorted (corrupt) index, the function found contains the address.
        if let Some(again) = table.func(found) {
            assert!(
                again.entry <= f.entry && f.entry < again.end,
                "{again:?} for {f:?}"
            );
        }
        let mut last = f.entry;
        let _ = table.sp_deltas(&f, &mut |s, e, _| {
            assert!(
                s == last && s < e && e <= f.end,
                "range {s:#x}..{e:#x} after {last:#x} in {f:?}"
            );
            last = e;
            true
        });
        for pc in [f.entry, f.entry + (f.end - f.entry) / 2, f.end - 1] {
            let frames = table.frames(&f, pc);
            assert!(!frames.is_empty() && frames.len() <= 65);
        }
    }
});
