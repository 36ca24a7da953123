//! How a table is laid out for the kernel: its 64 KiB pages ([`page_layout`]), and where its rows
//! go in the kernel's row array ([`ChunkAllocator`]). Pure functions, no I/O.
use std::collections::BTreeMap;

use profiler_common::unwind::{TABLE_PAGE_SHIFT, UnwindRow, kind};

/// One page of a table as laid out for the kernel: an optional synthetic first row (the rule in
/// force at the page's first byte) followed by a run of the table's own rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageSpan {
    pub page: u32,
    pub lead: Option<UnwindRow>,
    pub rows: std::ops::Range<usize>,
}

impl PageSpan {
    pub fn len(&self) -> usize {
        usize::from(self.lead.is_some()) + self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The page's rows, in order.
    pub fn iter<'a>(&'a self, rows: &'a [UnwindRow]) -> impl Iterator<Item = UnwindRow> + 'a {
        self.lead
            .into_iter()
            .chain(rows[self.rows.clone()].iter().copied())
    }
}

/// Lays a table out in 64 KiB pages of the object's address space, without copying its rows (a
/// large binary's table can be tens of MiB; this holds one small entry per page). Each page
/// starts with the rule in force at its first byte; pages entirely without CFI are left out (the
/// kernel then unwinds by frame pointers, as a `NO_INFO` row would tell it to).
pub fn page_layout(rows: &[UnwindRow]) -> Vec<PageSpan> {
    let mut spans: Vec<PageSpan> = Vec::new();
    let mut previous: Option<UnwindRow> = None;
    for (i, row) in rows.iter().enumerate() {
        let page = row.pc >> TABLE_PAGE_SHIFT;
        if let Some(last) = spans.last_mut()
            && last.page == page
        {
            last.rows.end = i + 1;
            previous = Some(*row);
            continue;
        }
        // A new page. Pages between the previous row and this one run entirely under the
        // previous rule.
        let under_previous = previous.filter(|p| p.kind != kind::NO_INFO);
        if let Some(prev) = under_previous {
            for p in (prev.pc >> TABLE_PAGE_SHIFT) + 1..page {
                spans.push(PageSpan {
                    page: p,
                    lead: Some(UnwindRow {
                        pc: p << TABLE_PAGE_SHIFT,
                        ..prev
                    }),
                    rows: i..i,
                });
            }
        }
        let page_start = page << TABLE_PAGE_SHIFT;
        let lead = (row.pc != page_start).then(|| match under_previous {
            Some(prev) => UnwindRow {
                pc: page_start,
                ..prev
            },
            None => UnwindRow {
                pc: page_start,
                kind: kind::NO_INFO,
                ..UnwindRow::default()
            },
        });
        spans.push(PageSpan {
            page,
            lead,
            rows: i..i + 1,
        });
        previous = Some(*row);
    }
    spans
}

/// [`page_layout`] with each page's rows copied out (for tests and tools).
pub fn split_pages(rows: &[UnwindRow]) -> Vec<(u32, Vec<UnwindRow>)> {
    page_layout(rows)
        .into_iter()
        .map(|span| (span.page, span.iter(rows).collect()))
        .collect()
}

/// First-fit allocator of contiguous chunk runs, coalescing on release.
#[derive(Debug)]
pub struct ChunkAllocator {
    /// start → length of each free run.
    free: BTreeMap<u32, u32>,
}

impl ChunkAllocator {
    pub fn new(chunks: u32) -> Self {
        let mut free = BTreeMap::new();
        if chunks > 0 {
            free.insert(0, chunks);
        }
        Self { free }
    }

    pub fn free_chunks(&self) -> u32 {
        self.free.values().sum()
    }

    pub fn allocate(&mut self, len: u32) -> Option<u32> {
        let (&start, &run) = self.free.iter().find(|(_, run)| **run >= len)?;
        self.free.remove(&start);
        if run > len {
            self.free.insert(start + len, run - len);
        }
        Some(start)
    }

    pub fn release(&mut self, start: u32, len: u32) {
        let mut start = start;
        let mut len = len;
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back()
            && prev + prev_len == start
        {
            self.free.remove(&prev);
            start = prev;
            len += prev_len;
        }
        if let Some(&next_len) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += next_len;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pc: u32, kind: u8, cfa: i16) -> UnwindRow {
        UnwindRow {
            pc,
            kind,
            _pad: 0,
            cfa_offset: cfa,
            fp_offset: 0,
            ra_offset: -8,
        }
    }

    #[test]
    fn pages_start_with_the_rule_in_force() {
        let rows = [
            row(0x1_0000, kind::CFA_SP, 8),
            row(0x1_fff0, kind::CFA_SP, 16),
            // A long function spanning two more pages.
            row(0x4_0010, kind::NO_INFO, 0),
            row(0x6_0000, kind::CFA_SP, 8),
            row(0x6_0100, kind::NO_INFO, 0),
        ];
        let pages = split_pages(&rows);
        let keys: Vec<u32> = pages.iter().map(|(p, _)| *p).collect();
        assert_eq!(keys, vec![1, 2, 3, 4, 6]);
        assert_eq!(pages[0].1, vec![rows[0], rows[1]]);
        assert_eq!(pages[1].1, vec![row(0x2_0000, kind::CFA_SP, 16)]);
        assert_eq!(pages[2].1, vec![row(0x3_0000, kind::CFA_SP, 16)]);
        assert_eq!(
            pages[3].1,
            vec![row(0x4_0000, kind::CFA_SP, 16), rows[2]],
            "the rule runs up to the NO_INFO row"
        );
        assert_eq!(pages[4].1, vec![rows[3], rows[4]]);
    }

    #[test]
    fn a_page_starting_mid_gap_has_no_info_first() {
        let rows = [
            row(0x1_0100, kind::CFA_SP, 8),
            row(0x1_0200, kind::NO_INFO, 0),
        ];
        let pages = split_pages(&rows);
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].1[0].kind, kind::NO_INFO);
        assert_eq!(pages[0].1[0].pc, 0x1_0000);
        assert_eq!(&pages[0].1[1..], &rows);
    }

    #[test]
    fn allocator_first_fit_and_coalescing() {
        let mut a = ChunkAllocator::new(10);
        assert_eq!(a.allocate(4), Some(0));
        assert_eq!(a.allocate(4), Some(4));
        assert_eq!(a.allocate(4), None);
        a.release(0, 4);
        assert_eq!(a.allocate(3), Some(0));
        a.release(4, 4);
        a.release(0, 3);
        assert_eq!(a.free_chunks(), 10);
        assert_eq!(a.allocate(10), Some(0), "released runs coalesce");
    }
}
