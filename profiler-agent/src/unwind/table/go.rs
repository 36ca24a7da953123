//! Unwind rows of Go code, from the stack-pointer deltas of its function table (`.gopclntab`)
//! rather than CFI, which Go does not emit; CFI rows fill in for code outside the Go text and
//! for functions without a usable delta table (assembly, C linked in by cgo).
use profiler_common::unwind::{UnwindRow, arch, kind};

use super::TableInfo;
use super::emit::{Emitter, Rule};
use crate::gopclntab;

/// Functions where a Go stack ends: the outermost frames of goroutines (`goexit`) and threads
/// (`mstart`, `rt0_go`), and code that switches stacks (to g0 or the signal stack), where the
/// caller's frame is on another stack than the one being walked. Go's own traceback stops or
/// jumps at these; unwinding through them by stack-pointer deltas would read the wrong stack.
const GO_STACK_ENDS: &[&str] = &[
    "runtime.goexit",
    "runtime.mstart",
    "runtime.rt0_go",
    "runtime.mcall",
    "runtime.morestack",
    "runtime.morestack_noctxt",
    "runtime.systemstack",
    "runtime.systemstack_switch",
    "runtime.asmcgocall",
    "runtime.asmcgocall_no_g",
    "runtime.cgocallback",
    "runtime.gogo",
    "runtime.sigtramp",
    "runtime.cgoSigtramp",
    "runtime.sigreturn",
    "runtime.sigreturn__sigaction",
];

/// The rule for code `delta` bytes of stack below its function's entry SP.
fn go_rule(arch: u32, delta: i32, info: &mut TableInfo) -> Rule {
    let Ok(delta) = i16::try_from(delta) else {
        info.offset_overflows += 1;
        return Rule::UNSUPPORTED;
    };
    if delta < 0 {
        return Rule::UNSUPPORTED;
    }
    if arch == arch::AARCH64 {
        // The link register is saved at the bottom of the frame and the frame pointer below it;
        // with no frame yet, the return address is still in the link register.
        return Rule {
            kind: kind::GO_ARM64,
            cfa_offset: delta,
            fp_offset: 0,
            ra_offset: 0,
        };
    }
    // The call pushed the return address; a function with a frame saved the caller's frame
    // pointer just below it.
    let Some(cfa_offset) = delta.checked_add(8) else {
        info.offset_overflows += 1;
        return Rule::UNSUPPORTED;
    };
    Rule {
        kind: kind::CFA_SP,
        cfa_offset,
        fp_offset: if delta > 0 { -16 } else { 0 },
        ra_offset: -8,
    }
}

/// The rule of `rows` (sorted CFI rows) in force at `pc`.
fn rule_at(rows: &[UnwindRow], pc: u32) -> Rule {
    match rows.partition_point(|r| r.pc <= pc) {
        0 => Rule::NO_INFO,
        n => Rule::of(&rows[n - 1]),
    }
}

/// Emits CFI's rules for `[start, end)`.
fn emit_cfi_range<F: FnMut(UnwindRow)>(
    rows: &[UnwindRow],
    start: u32,
    end: u32,
    out: &mut Emitter<'_, F>,
) {
    out.push(start, rule_at(rows, start));
    let from = rows.partition_point(|r| r.pc <= start);
    for row in rows[from..].iter().take_while(|r| r.pc < end) {
        out.push(row.pc, Rule::of(row));
    }
}

/// Emits the rows of a Go binary: every function of its table by its stack-pointer deltas, the
/// CFI rows (`cfi`) outside them and for functions without a usable delta table.
pub(super) fn emit_go<B: gopclntab::Bytes, F: FnMut(UnwindRow)>(
    go: &mut gopclntab::Table<B>,
    arch: u32,
    cfi: &[UnwindRow],
    out: &mut Emitter<'_, F>,
) {
    let small = |pc: u64| u32::try_from(pc).ok();
    let Some((Some(text_start), Some(text_end))) =
        go.text_range().map(|(s, e)| (small(s), small(e)))
    else {
        out.info.go_errors += 1;
        emit_cfi_range(cfi, 0, u32::MAX, out);
        return;
    };
    for row in cfi.iter().take_while(|r| r.pc < text_start) {
        out.push(row.pc, Rule::of(row));
    }
    let mut deltas: Vec<(u32, u32, i32)> = Vec::new();
    for i in 0..go.len() {
        let Some(f) = go.func(i) else {
            out.info.go_errors += 1;
            continue;
        };
        let (Some(entry), Some(end)) = (small(f.entry), small(f.end)) else {
            out.info.go_errors += 1;
            continue;
        };
        if entry == end {
            continue;
        }
        let stops = f.flag & gopclntab::FLAG_TOPFRAME != 0
            || go
                .name(&f)
                .is_some_and(|name| GO_STACK_ENDS.contains(&name.as_str()));
        if stops {
            out.info.go_functions += 1;
            out.push(entry, Rule::END);
            continue;
        }
        deltas.clear();
        let decoded = go.sp_deltas(&f, &mut |s, e, v| {
            deltas.push((s as u32, e as u32, v));
            true
        });
        if decoded.is_none() || deltas.is_empty() {
            // Assembly without a delta table, or host (C) code linked into the Go text.
            out.info.go_errors += u64::from(f.has_sp_deltas());
            emit_cfi_range(cfi, entry, end, out);
            continue;
        }
        out.info.go_functions += 1;
        let spwrite = f.flag & gopclntab::FLAG_SPWRITE != 0;
        for &(start, _, delta) in &deltas {
            // Functions that move SP themselves (beyond their prologue) are walked by frame
            // pointers, as Go's own traceback refuses to unwind them by deltas.
            let rule = if spwrite {
                Rule::NO_INFO
            } else {
                go_rule(arch, delta, &mut out.info)
            };
            out.push(start, rule);
        }
        let covered = deltas.last().map_or(entry, |d| d.1);
        if covered < end {
            out.push(covered, Rule::NO_INFO);
        }
    }
    emit_cfi_range(cfi, text_end, u32::MAX, out);
}
