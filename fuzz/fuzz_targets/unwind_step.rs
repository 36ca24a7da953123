//! The unwinder shared with the BPF program (`profiler_common::unwind`) on any rows, mappings,
//! registers and stack memory: `find_row` and `find_mapping` agree with linear scans within the
//! sizes they are bounded for and never panic beyond them; `step` and `step_frame_pointer` never
//! panic, and a caller they recover is above its callee on the stack.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::replay::StackSnapshot;
use profiler_common::unwind::{
    Identity, MAX_MAPPINGS, MAX_ROWS_PER_PAGE, Mapping, Regs, UnwindRow, arch, find_mapping,
    find_row, kind, step, step_frame_pointer,
};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Row addresses (sorted before searching, then searched unsorted too).
    pcs: Vec<u32>,
    probe: u32,
    /// A long table without memory: `base + i * stride` for `i < len`.
    base: u32,
    stride: u16,
    len: u32,
    /// Mappings as (gap before, size) from `first`.
    first: u64,
    mappings: Vec<(u32, u32)>,
    mapping_len: u8,
    mapping_probe: u64,
    aarch64: bool,
    row: (u8, i16, i16, i16),
    regs: (u64, u64, u64, u64),
    leaf: bool,
    stack_base: u64,
    stack: Vec<u8>,
}

/// The last index whose pc is at most `pc`, by linear scan.
fn linear_row(pcs: &[u32], pc: u32) -> Option<u32> {
    pcs.iter().rposition(|&p| p <= pc).map(|i| i as u32)
}

fn check_find_row(input: &Input) {
    let mut pcs = input.pcs.clone();
    pcs.truncate(MAX_ROWS_PER_PAGE as usize);
    let unsorted = pcs.clone();
    pcs.sort_unstable();
    let len = pcs.len() as u32;
    let search = |pcs: &[u32], len: u32, pc: u32| {
        find_row(
            len,
            pc,
            &mut |i| pcs.get(i as usize).copied(),
            &mut Identity,
        )
    };
    for pc in [
        input.probe,
        input.probe.wrapping_add(1),
        input.probe.wrapping_sub(1),
    ] {
        assert_eq!(
            search(&pcs, len, pc),
            linear_row(&pcs, pc),
            "pc {pc:#x} in {pcs:?}"
        );
        // Unsorted rows, or a length past the rows that exist: an answer in range, or none.
        if let Some(i) = search(&unsorted, len, pc) {
            assert!(i < len);
        }
        if let Some(i) = search(&pcs, len.saturating_add(input.probe % 4), pc) {
            assert!(i < len);
        }
    }

    // The longest extent a page can have, searched without holding its rows.
    let len = input.len % (MAX_ROWS_PER_PAGE + 1);
    let stride = u32::from(input.stride).clamp(1, (u32::MAX / len.max(1)).max(1));
    let base = input.base.min(u32::MAX - stride * len);
    let at = |i: u32| (i < len).then(|| base + i * stride);
    let found = find_row(len, input.probe, &mut |i| at(i), &mut Identity);
    let expected =
        (len > 0 && input.probe >= base).then(|| ((input.probe - base) / stride).min(len - 1));
    assert_eq!(found, expected, "base {base:#x} stride {stride} len {len}");
}

fn check_find_mapping(input: &Input) {
    let mut mappings = Vec::new();
    let mut next = input.first;
    for (i, &(gap, size)) in input.mappings.iter().enumerate() {
        let Some(start) = next.checked_add(u64::from(gap)) else {
            break;
        };
        let Some(end) = start.checked_add(u64::from(size.max(1))) else {
            break;
        };
        mappings.push(Mapping {
            start,
            end,
            bias: start / 2,
            table_id: i as u32,
            _pad: 0,
        });
        next = end;
    }
    let len = u32::from(input.mapping_len);
    let at = |i: u32| mappings.get(i as usize).copied();
    let searched = (len as usize).min(MAX_MAPPINGS);
    let linear = |pc: u64| {
        mappings
            .iter()
            .take(searched)
            .find(|m| m.start <= pc && pc < m.end)
            .copied()
    };
    let mut probes = vec![input.mapping_probe];
    probes.extend(mappings.iter().flat_map(|m| [m.start, m.end - 1, m.end]));
    for pc in probes {
        let found = find_mapping(len, pc, &mut |i| at(i), &mut Identity);
        if searched <= mappings.len() {
            assert_eq!(found, linear(pc), "pc {pc:#x}, len {len}, {mappings:?}");
        } else if let Some(m) = found {
            // Fewer mappings than `len` says: what is found still contains the address.
            assert!(m.start <= pc && pc < m.end);
        }
    }
}

fn check_step(input: &Input) {
    let arch = if input.aarch64 {
        arch::AARCH64
    } else {
        arch::X86_64
    };
    let (pc, sp, fp, lr) = input.regs;
    let regs = Regs { pc, sp, fp, lr };
    let (kind_byte, cfa_offset, fp_offset, ra_offset) = input.row;
    let row = UnwindRow {
        pc: 0,
        kind: kind_byte % 8,
        _pad: 0,
        cfa_offset,
        fp_offset,
        ra_offset,
    };
    // Memory as the replay reads it: the recorded bytes from `stack_base` up.
    let memory = StackSnapshot {
        arch,
        regs,
        stack_base: input.stack_base,
        stack: input.stack.clone(),
    };
    let mut read = |addr| memory.read(addr);

    let check_caller = |caller: &Regs| {
        assert_ne!(caller.pc, 0, "a zero return address ends the stack");
        assert_eq!(caller.lr, caller.pc);
        if arch == arch::AARCH64 {
            assert!(caller.pc < 1 << 48, "PAC bits left in {caller:?}");
        }
    };
    if let Ok(Some(caller)) = step(arch, &row, &regs, input.leaf, &mut read) {
        check_caller(&caller);
        if row.kind != kind::NO_INFO {
            assert!(caller.sp >= regs.sp, "CFA below SP: {regs:?} → {caller:?}");
            assert!(
                caller.sp > regs.sp || input.leaf,
                "no progress: {regs:?} → {caller:?}"
            );
        }
    }
    if let Ok(Some(caller)) = step_frame_pointer(arch, &regs, &mut read) {
        check_caller(&caller);
        assert!(
            caller.sp > regs.sp,
            "frame-pointer step went down: {regs:?} → {caller:?}"
        );
    }
}

fuzz_target!(|input: Input| {
    check_find_row(&input);
    check_find_mapping(&input);
    check_step(&input);
});
