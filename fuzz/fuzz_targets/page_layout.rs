//! `unwind::loader::page_layout` / `split_pages` on any rows. Never panics; on a sorted table
//! (what the cache holds) every row lands in exactly one page, pages are sorted and start with
//! the rule in force, and lookups through the pages, and through the replay's whole-table
//! lookup, agree with a linear scan.
#![no_main]

use arbitrary::Arbitrary;
use kalypso_fuzz::{check_page_layout, check_table_lookup, row};
use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::loader::split_pages;
use profiler_common::unwind::{TABLE_PAGE_BYTES, UnwindRow};

/// Longest step between two rows: a few pages, so that gaps span pages without every input
/// laying out tens of thousands of them (`base` reaches the top of the address space).
const MAX_STEP: u32 = 4 * TABLE_PAGE_BYTES as u32;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Address of the first row.
    base: u32,
    /// Address step from the previous row, kind, CFA, FP and RA offsets.
    rows: Vec<(u32, u8, i16, i16, i16)>,
    /// Addresses to look up, besides the rows' own and the page starts.
    probes: Vec<u32>,
    /// Shrinks the steps, so that rows crowd into few pages.
    step_shift: u8,
}

fuzz_target!(|input: Input| {
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(input.rows.len());
    let mut pc = input.base;
    for (i, &(step, kind, cfa, fp, ra)) in input.rows.iter().enumerate() {
        if i > 0 {
            let step = ((step % MAX_STEP) >> (input.step_shift % 20)).max(1);
            let Some(next) = pc.checked_add(step) else {
                break;
            };
            pc = next;
        }
        rows.push(row(pc, kind, cfa, fp, ra));
    }
    check_page_layout(&rows, &input.probes);
    check_table_lookup(&rows, &input.probes);

    // Unsorted rows, repeated addresses (never in a table, but never a panic either).
    let unsorted: Vec<UnwindRow> = input
        .rows
        .iter()
        .map(|&(pc, kind, cfa, fp, ra)| {
            row(input.base.wrapping_add(pc % MAX_STEP), kind, cfa, fp, ra)
        })
        .collect();
    let laid_out: usize = split_pages(&unsorted)
        .iter()
        .map(|(_, rows)| rows.len())
        .sum();
    assert!(laid_out >= unsorted.len());
});
