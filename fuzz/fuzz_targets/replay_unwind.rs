//! `unwind::replay::unwind` (the BPF program's walk, in userspace) over any mappings, tables and
//! stack memory. Never panics; stops within `max_frames` and reports it consistently.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use kalypso_fuzz::row;
use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::replay::StackSnapshot;
use profiler_common::unwind::{
    MAX_MAPPINGS, MAX_UNWOUND_FRAMES, Mapping, ProcessMappings, Regs, Stop,
};

#[derive(Arbitrary, Debug)]
struct Input {
    aarch64: bool,
    regs: (u64, u64, u64, u64),
    stack_base: u64,
    max_frames: u8,
    mappings_len: u8,
    /// start, size, bias, table id
    mappings: Vec<(u64, u32, u64, u8)>,
    /// table id → rows (pc, kind, cfa, fp, ra); sorted unless `unsorted`
    tables: Vec<(u8, Vec<(u32, u8, i16, i16, i16)>)>,
    unsorted: bool,
    stack: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let mut mappings = ProcessMappings {
        len: u32::from(input.mappings_len),
        ..ProcessMappings::default()
    };
    for (slot, &(start, size, bias, table_id)) in mappings.mappings.iter_mut().zip(&input.mappings)
    {
        *slot = Mapping {
            start,
            end: start.saturating_add(u64::from(size)),
            bias,
            table_id: u32::from(table_id),
            _pad: 0,
        };
    }
    if !input.unsorted {
        let written = input.mappings.len().min(MAX_MAPPINGS);
        mappings.mappings[..written].sort_by_key(|m| m.start);
    }
    let tables: BTreeMap<u32, Vec<_>> = input
        .tables
        .iter()
        .map(|(id, rows)| {
            let mut rows: Vec<_> = rows
                .iter()
                .map(|&(pc, k, c, f, r)| row(pc, k, c, f, r))
                .collect();
            if !input.unsorted {
                rows.sort_by_key(|r| r.pc);
            }
            (u32::from(*id), rows)
        })
        .collect();
    let (pc, sp, fp, lr) = input.regs;
    let snapshot = StackSnapshot {
        arch: u32::from(input.aarch64),
        regs: Regs { pc, sp, fp, lr },
        stack_base: input.stack_base,
        stack: input.stack,
    };
    let max_frames = usize::from(input.max_frames) % MAX_UNWOUND_FRAMES + 1;
    let unwound = snapshot.unwind(&mappings, &tables, max_frames);
    assert!(!unwound.frames.is_empty() && unwound.frames.len() <= max_frames);
    assert_eq!(unwound.frames[0], pc);
    assert!(unwound.fp_fallback_frames <= unwound.frames.len());
    if unwound.truncated {
        assert_eq!(unwound.frames.len(), max_frames);
        assert_eq!(unwound.stop, Stop::Complete);
    }
});
