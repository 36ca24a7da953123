//! The rows a table is made of as they are emitted: a [`Rule`] (what a row says, without its
//! address) and the [`Emitter`] that merges rows at one address and drops repeated rules.
use profiler_common::unwind::{UnwindRow, kind};

use super::TableInfo;

/// A row's rule without its address: what merging compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Rule {
    pub(super) kind: u8,
    pub(super) cfa_offset: i16,
    pub(super) fp_offset: i16,
    pub(super) ra_offset: i16,
}

impl Rule {
    const fn bare(kind: u8) -> Self {
        Self {
            kind,
            cfa_offset: 0,
            fp_offset: 0,
            ra_offset: 0,
        }
    }

    pub(super) const UNSUPPORTED: Rule = Rule::bare(kind::UNSUPPORTED);
    pub(super) const NO_INFO: Rule = Rule::bare(kind::NO_INFO);
    pub(super) const END: Rule = Rule::bare(kind::END);

    pub(super) fn of(row: &UnwindRow) -> Self {
        Self {
            kind: row.kind,
            cfa_offset: row.cfa_offset,
            fp_offset: row.fp_offset,
            ra_offset: row.ra_offset,
        }
    }

    pub(super) fn at(self, pc: u32) -> UnwindRow {
        UnwindRow {
            pc,
            kind: self.kind,
            _pad: 0,
            cfa_offset: self.cfa_offset,
            fp_offset: self.fp_offset,
            ra_offset: self.ra_offset,
        }
    }
}

/// Hands rows to the sink one behind, so that a later row at the same address replaces an earlier
/// one and a row repeating the rule in force is dropped.
pub(super) struct Emitter<'s, F: FnMut(UnwindRow)> {
    pub(super) sink: &'s mut F,
    pub(super) pending: Option<UnwindRow>,
    /// Rule of the last row given to the sink.
    pub(super) last_rule: Option<Rule>,
    pub(super) info: TableInfo,
}

impl<F: FnMut(UnwindRow)> Emitter<'_, F> {
    /// Queues a row; `false` (and nothing queued) when `pc` is below the queued row's.
    pub(super) fn push(&mut self, pc: u32, rule: Rule) -> bool {
        match self.pending {
            Some(p) if pc < p.pc => return false,
            Some(p) if pc > p.pc => self.flush(),
            _ => {}
        }
        self.pending = Some(rule.at(pc));
        true
    }

    fn flush(&mut self) {
        let Some(row) = self.pending.take() else {
            return;
        };
        let rule = Rule::of(&row);
        if self.last_rule == Some(rule) {
            return;
        }
        self.last_rule = Some(rule);
        self.info.rows += 1;
        if row.kind == kind::UNSUPPORTED {
            self.info.unsupported_rows += 1;
        }
        (self.sink)(row);
    }

    pub(super) fn finish(mut self) -> TableInfo {
        self.flush();
        self.info
    }
}
