//! Checks shared by the fuzz targets: what a table, its page layout and a row lookup must
//! satisfy, against plain linear scans that are obviously right.
use std::collections::BTreeMap;

/// The ELF builder the agent's own tests use (`--features test-support`).
pub use profiler_agent::elf::testing::elf_with_segments;
use profiler_agent::unwind::loader::{PageSpan, page_layout};
use profiler_agent::unwind::replay::RowLookup;
use profiler_common::unwind::{
    Identity, MAX_ROWS_PER_PAGE, TABLE_PAGE_SHIFT, UnwindRow, find_row, kind,
};

/// What a row tells the unwinder, without its address; `None` where frame pointers take over
/// (no row yet, or a [`kind::NO_INFO`] row).
pub fn effective_rule(row: Option<&UnwindRow>) -> Option<(u8, i16, i16, i16)> {
    row.filter(|r| r.kind != kind::NO_INFO)
        .map(|r| (r.kind, r.cfa_offset, r.fp_offset, r.ra_offset))
}

/// The last row whose `pc` is at most `pc` (`rows` sorted by `pc`), found by the standard
/// library rather than by the unwinder's own search.
pub fn row_at(rows: &[UnwindRow], pc: u32) -> Option<&UnwindRow> {
    rows[..rows.partition_point(|r| r.pc <= pc)].last()
}

/// What the table builder and the cache reader promise about a table: strictly ascending
/// addresses, known kinds, zero padding.
pub fn check_table_rows(rows: &[UnwindRow]) {
    for pair in rows.windows(2) {
        assert!(pair[0].pc < pair[1].pc, "rows out of order: {pair:?}");
    }
    for row in rows {
        assert!(row.kind <= kind::LAST, "unknown kind: {row:?}");
        assert_eq!(row._pad, 0, "padding set: {row:?}");
    }
}

/// Lays `rows` (strictly ascending) out in pages and checks the layout: every row in exactly one
/// page, in order; pages ascending, each starting with the rule in force at its first byte; and,
/// at `probes` (plus every row's address, the byte before it and every page start), the row
/// found the way the BPF program finds it gives the rule a linear scan of the whole table gives.
pub fn check_page_layout(rows: &[UnwindRow], probes: &[u32]) {
    let spans = page_layout(rows);
    let mut next_row = 0;
    let mut previous_page = None;
    let mut pages = BTreeMap::new();
    for span in &spans {
        assert!(
            previous_page < Some(span.page),
            "pages out of order: {spans:?}"
        );
        previous_page = Some(span.page);
        assert_eq!(span.rows.start, next_row, "rows skipped or repeated");
        next_row = span.rows.end;
        assert!(!span.is_empty(), "empty page {}", span.page);
        assert!(span.len() <= MAX_ROWS_PER_PAGE as usize, "page too long");
        let page_rows: Vec<UnwindRow> = span.iter(rows).collect();
        let page_start = span.page << TABLE_PAGE_SHIFT;
        assert!(
            page_rows[0].pc <= page_start,
            "page {:#x} starts with a row at {:#x}",
            span.page,
            page_rows[0].pc
        );
        if let Some(lead) = span.lead {
            assert_eq!(lead.pc, page_start, "lead row off the page start");
        }
        for row in &rows[span.rows.clone()] {
            assert_eq!(row.pc >> TABLE_PAGE_SHIFT, span.page, "row on another page");
        }
        for pair in page_rows.windows(2) {
            assert!(pair[0].pc < pair[1].pc, "page rows out of order: {pair:?}");
        }
        pages.insert(span.page, span);
    }
    assert_eq!(next_row, rows.len(), "rows left out of every page");

    let Some(last) = rows.last() else { return };
    let last_page = last.pc >> TABLE_PAGE_SHIFT;
    let starts = pages.keys().map(|p| p << TABLE_PAGE_SHIFT);
    let around_rows = rows.iter().flat_map(|r| [r.pc, r.pc.wrapping_sub(1)]);
    for pc in probes.iter().copied().chain(around_rows).chain(starts) {
        let page = pc >> TABLE_PAGE_SHIFT;
        if page > last_page {
            // Past the last row's page no page is loaded: frame pointers, whatever the rule.
            continue;
        }
        let expected = effective_rule(row_at(rows, pc));
        let found = match pages.get(&page) {
            Some(span) => find_in_page(span, rows, pc),
            None => None,
        };
        assert_eq!(
            effective_rule(found.as_ref()),
            expected,
            "rule at {pc:#x} (page {page:#x})"
        );
    }
}

/// The row in force at `pc` in one page, searched as the BPF program searches an extent.
pub fn find_in_page(span: &PageSpan, rows: &[UnwindRow], pc: u32) -> Option<UnwindRow> {
    let lead = usize::from(span.lead.is_some());
    let at = |i: usize| match (i.checked_sub(lead), span.lead) {
        (None, lead) => lead,
        (Some(i), _) => rows[span.rows.clone()].get(i).copied(),
    };
    let len = u32::try_from(span.len()).ok()?;
    let i = find_row(
        len,
        pc,
        &mut |i| at(i as usize).map(|r| r.pc),
        &mut Identity,
    )?;
    at(i as usize)
}

/// The replay's whole-table lookup ([`RowLookup`] for a `BTreeMap`) must find exactly the row a
/// linear scan finds, for every `pc` in `probes` (`rows` sorted).
pub fn check_table_lookup(rows: &[UnwindRow], probes: &[u32]) {
    let tables = BTreeMap::from([(1u32, rows.to_vec())]);
    for &pc in probes {
        assert_eq!(
            tables.row(1, u64::from(pc)),
            row_at(rows, pc).copied(),
            "lookup at {pc:#x}"
        );
    }
}

/// A row from fuzzer-chosen fields, with a valid kind.
pub fn row(pc: u32, kind_byte: u8, cfa: i16, fp: i16, ra: i16) -> UnwindRow {
    UnwindRow {
        pc,
        kind: kind_byte % (kind::UNSUPPORTED + 1),
        _pad: 0,
        cfa_offset: cfa,
        fp_offset: fp,
        ra_offset: ra,
    }
}
