//! Compact unwind tables and the unwinding step, shared by the kernel-side sampler and the agent.
//!
//! The agent turns each object's `.eh_frame` / `.debug_frame` into a sorted list of [`UnwindRow`]s
//! (one per change of the unwind rule), splits it into [`TABLE_PAGE_BYTES`] pages of the object's
//! virtual address space and loads every page as a contiguous extent of a global row array. The BPF
//! program finds the mapping of a PC ([`find_mapping`]), the page extent through a hash map, the row
//! by binary search ([`find_row`]) and then recovers the caller's registers with [`step`] (or
//! [`step_frame_pointer`] where no table covers the PC). Userspace replay tests run the very same
//! functions against recorded stack memory.
//!
//! Everything here is `#[inline(always)]`, loop-bounded and free of recursion and slices indexed
//! by unchecked values, so that it verifies as BPF; the architecture is a runtime value so one
//! object serves x86_64 and aarch64 (the verifier prunes the other branch, the value being a
//! read-only global).

/// Bytes of an object's virtual address space covered by one page of its table.
pub const TABLE_PAGE_SHIFT: u32 = 16;
pub const TABLE_PAGE_BYTES: u64 = 1 << TABLE_PAGE_SHIFT;

/// Maximum rows in one page extent: a row per byte of the page plus the row in force at its start.
pub const MAX_ROWS_PER_PAGE: u32 = (1 << TABLE_PAGE_SHIFT) + 1;

/// Binary-search iterations that cover [`MAX_ROWS_PER_PAGE`] rows (2^17 > 65,537).
pub const ROW_SEARCH_STEPS: u32 = 17;

/// Executable mappings with unwind tables per process; further ones unwind by frame pointers.
/// A power of two: the BPF program masks indices with `MAX_MAPPINGS - 1`.
pub const MAX_MAPPINGS: usize = 128;
const _: () = assert!(MAX_MAPPINGS.is_power_of_two());

/// Binary-search iterations that cover [`MAX_MAPPINGS`] (2^8 > 128).
pub const MAPPING_SEARCH_STEPS: u32 = 8;

/// User frames the kernel-side unwinder records per sample (at least `PERF_MAX_STACK_DEPTH`).
pub const MAX_UNWOUND_FRAMES: usize = 128;

/// Frames unwound per program run; the program tail-calls itself for the next batch.
pub const FRAMES_PER_PROGRAM: usize = 16;

// Reaching MAX_UNWOUND_FRAMES takes MAX_UNWOUND_FRAMES / FRAMES_PER_PROGRAM runs, all but the
// first by tail call; the kernel allows 33 tail calls per sample.
const _: () = assert!(MAX_UNWOUND_FRAMES / FRAMES_PER_PROGRAM <= 33);

/// Architecture the tables were built for (also the layout of the sampled registers).
pub mod arch {
    pub const X86_64: u32 = 0;
    pub const AARCH64: u32 = 1;
}

/// How an [`UnwindRow`] computes the canonical frame address (CFA).
pub mod kind {
    /// CFA = SP + `cfa_offset`.
    pub const CFA_SP: u8 = 0;
    /// CFA = FP (rbp / x29) + `cfa_offset`.
    pub const CFA_FP: u8 = 1;
    /// The outermost frame (the return address is undefined, as in `_start`): the stack is complete.
    pub const END: u8 = 2;
    /// x86_64 PLT stub: CFA = SP + `cfa_offset`, plus 8 once the stub has pushed its argument
    /// (the standard `DW_OP_breg7 rsp+8; DW_OP_breg16 rip; lit15; and; lit11; ge; lit3; shl; plus`).
    pub const PLT: u8 = 3;
    /// No CFI covers this address (a gap between FDEs): unwind by frame pointers.
    pub const NO_INFO: u8 = 4;
    /// CFI we cannot express (DWARF expressions, CFA in another register): the unwind stops here.
    pub const UNSUPPORTED: u8 = 5;
    /// Go on aarch64: CFA = SP + `cfa_offset`, the return address saved at SP (the bottom of the
    /// frame) and the caller's frame pointer at SP - 8; with `cfa_offset` 0 (a frameless leaf,
    /// or before the prologue) the return address is still in the link register.
    pub const GO_ARM64: u8 = 6;
    /// The highest kind: tables with others are invalid.
    pub const LAST: u8 = GO_ARM64;
}

/// One row of an unwind table: the rule in force from `pc` up to the next row's `pc`.
///
/// 12 bytes; `pc` is an ELF virtual address of the object (objects mapped above 4 GiB of their
/// own address space get no table).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UnwindRow {
    pub pc: u32,
    /// One of [`kind`].
    pub kind: u8,
    pub _pad: u8,
    pub cfa_offset: i16,
    /// The caller's frame pointer is saved at CFA + `fp_offset`; 0: the frame pointer is unchanged.
    pub fp_offset: i16,
    /// The return address is saved at CFA + `ra_offset`; 0: it is still in the link register
    /// (aarch64 before the prologue saved it). Always -8 on x86_64.
    pub ra_offset: i16,
}

/// An [`UnwindRow`] as the kernel stores it: 8 bytes instead of 12. Rows sit in page extents,
/// so the `pc` is the 16-bit offset in the row's 64 KiB page; the saved-register offsets are
/// stored in 8-byte slots (they are multiples of 8 on both architectures).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PackedRow {
    /// Offset in the page ([`TABLE_PAGE_BYTES`]).
    pub pc: u16,
    pub kind: u8,
    pub _pad: u8,
    pub cfa_offset: i16,
    /// `fp_offset / 8`.
    pub fp_slot: i8,
    /// `ra_offset / 8`.
    pub ra_slot: i8,
}

impl PackedRow {
    /// Packs a row of a page. A rule whose offsets do not fit becomes [`kind::UNSUPPORTED`] (the
    /// unwind stops there, counted) rather than a wrong rule.
    pub fn pack(row: &UnwindRow) -> PackedRow {
        let pc = (row.pc & (TABLE_PAGE_BYTES as u32 - 1)) as u16;
        let slot = |off: i16| -> Option<i8> {
            if off % 8 == 0 {
                i8::try_from(off / 8).ok()
            } else {
                None
            }
        };
        match (slot(row.fp_offset), slot(row.ra_offset)) {
            (Some(fp_slot), Some(ra_slot)) => PackedRow {
                pc,
                kind: row.kind,
                _pad: 0,
                cfa_offset: row.cfa_offset,
                fp_slot,
                ra_slot,
            },
            _ => PackedRow {
                pc,
                kind: kind::UNSUPPORTED,
                ..PackedRow::default()
            },
        }
    }

    /// The row, at its address in the page starting at `page_start`.
    #[inline(always)]
    pub fn unpack(&self, page_start: u32) -> UnwindRow {
        UnwindRow {
            pc: page_start | u32::from(self.pc),
            kind: self.kind,
            _pad: 0,
            cfa_offset: self.cfa_offset,
            fp_offset: i16::from(self.fp_slot) * 8,
            ra_offset: i16::from(self.ra_slot) * 8,
        }
    }
}

/// Key of the page map: one page of one object's table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageKey {
    /// Id the agent gave the object's table.
    pub table_id: u32,
    /// Virtual address of the object >> [`TABLE_PAGE_SHIFT`].
    pub page: u32,
}

/// Where a page's rows sit in the global row array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageExtent {
    pub start: u32,
    pub len: u32,
}

/// One executable mapping of a process that has an unwind table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// Object virtual address = runtime address - `bias`.
    pub bias: u64,
    pub table_id: u32,
    pub _pad: u32,
}

/// The executable mappings of one process that have tables, sorted by `start`, not overlapping.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessMappings {
    pub len: u32,
    pub _pad: u32,
    pub mappings: [Mapping; MAX_MAPPINGS],
}

impl Default for ProcessMappings {
    fn default() -> Self {
        Self {
            len: 0,
            _pad: 0,
            mappings: [Mapping::default(); MAX_MAPPINGS],
        }
    }
}

/// The registers unwinding needs: program counter, stack pointer, frame pointer (rbp / x29) and
/// link register (x30; unused on x86_64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    pub lr: u64,
}

/// Why an unwind ended. `Complete` is the normal end; the others are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Reached the outermost frame (`END` row, or a zero return address / frame pointer).
    Complete,
    /// Reading the stack failed (paged out, or a bogus address).
    ReadFault,
    /// The row's rule cannot be followed ([`kind::UNSUPPORTED`], or the return address in the link
    /// register of a frame that is not the leaf).
    Unsupported,
    /// The stack pointer did not move up: a corrupt stack or a wrong table; stopping avoids a loop.
    NoProgress,
}

/// Strips aarch64 pointer-authentication bits from a return address (48-bit user addresses).
#[inline(always)]
pub fn strip_pac(arch: u32, addr: u64) -> u64 {
    if arch == arch::AARCH64 {
        addr & 0x0000_ffff_ffff_ffff
    } else {
        addr
    }
}

#[inline(always)]
fn offset(base: u64, off: i16) -> u64 {
    base.wrapping_add(off as i64 as u64)
}

/// Recovers the caller's registers with a table row. `leaf` is true for the sampled frame only
/// (where aarch64's return address may still be in the link register). `read` reads 8 bytes of
/// the target's stack.
///
/// Returns `Ok(None)` when `regs` is the outermost frame.
#[inline(always)]
pub fn step(
    arch: u32,
    row: &UnwindRow,
    regs: &Regs,
    leaf: bool,
    read: &mut impl FnMut(u64) -> Option<u64>,
) -> Result<Option<Regs>, Stop> {
    let cfa = match row.kind {
        kind::CFA_SP | kind::GO_ARM64 => offset(regs.sp, row.cfa_offset),
        kind::CFA_FP => offset(regs.fp, row.cfa_offset),
        kind::PLT => {
            let pushed = if regs.pc & 15 >= 11 { 8 } else { 0 };
            offset(regs.sp, row.cfa_offset).wrapping_add(pushed)
        }
        kind::END => return Ok(None),
        kind::NO_INFO => return step_frame_pointer(arch, regs, read),
        _ => return Err(Stop::Unsupported),
    };
    // Where the return address and the caller's frame pointer are saved (0: not saved).
    let (ra_at, fp_at) = if row.kind == kind::GO_ARM64 {
        if row.cfa_offset == 0 {
            (0, 0)
        } else {
            (regs.sp, regs.sp.wrapping_sub(8))
        }
    } else {
        (
            if row.ra_offset != 0 {
                offset(cfa, row.ra_offset)
            } else {
                0
            },
            if row.fp_offset != 0 {
                offset(cfa, row.fp_offset)
            } else {
                0
            },
        )
    };
    let ra = if ra_at != 0 {
        read(ra_at).ok_or(Stop::ReadFault)?
    } else if arch == arch::AARCH64 && leaf {
        regs.lr
    } else {
        return Err(Stop::Unsupported);
    };
    let fp = if fp_at != 0 {
        read(fp_at).ok_or(Stop::ReadFault)?
    } else {
        regs.fp
    };
    let ra = strip_pac(arch, ra);
    if ra == 0 {
        return Ok(None);
    }
    // The CFA is the caller's SP, above the callee's; only an aarch64 leaf that has not touched
    // the stack yet has CFA == SP.
    if cfa < regs.sp || (cfa == regs.sp && !leaf) {
        return Err(Stop::NoProgress);
    }
    Ok(Some(Regs {
        pc: ra,
        sp: cfa,
        fp,
        lr: ra,
    }))
}

/// Recovers the caller's registers from the frame record at FP (`[fp]` = caller's FP,
/// `[fp + 8]` = return address, on both architectures).
#[inline(always)]
pub fn step_frame_pointer(
    arch: u32,
    regs: &Regs,
    read: &mut impl FnMut(u64) -> Option<u64>,
) -> Result<Option<Regs>, Stop> {
    if regs.fp == 0 {
        return Ok(None);
    }
    if regs.fp < regs.sp {
        return Err(Stop::NoProgress);
    }
    let fp = read(regs.fp).ok_or(Stop::ReadFault)?;
    let ra = strip_pac(arch, read(regs.fp.wrapping_add(8)).ok_or(Stop::ReadFault)?);
    if ra == 0 {
        return Ok(None);
    }
    Ok(Some(Regs {
        pc: ra,
        sp: regs.fp.wrapping_add(16),
        fp,
        lr: ra,
    }))
}

/// Index (relative to the extent) of the last row whose `pc` is at most `pc`, by binary search in
/// at most [`ROW_SEARCH_STEPS`] steps; `row_pc(i)` reads the `pc` of row `i`. `None` when the
/// first row starts after `pc` (the agent makes every extent start at or before its page).
///
/// `opaque` must return its argument; the BPF program passes the bounds through it on every step
/// so that the verifier stops tracking their ranges (see [`Opaque`]).
#[inline(always)]
pub fn find_row(
    len: u32,
    pc: u32,
    row_pc: &mut impl FnMut(u32) -> Option<u32>,
    opaque: &mut impl Opaque,
) -> Option<u32> {
    // Invariant: rows [0, lo) start at or before pc, rows [hi, len) after it.
    let mut lo = 0u32;
    let mut hi = len;
    for _ in 0..ROW_SEARCH_STEPS {
        (lo, hi) = opaque.hide(lo, hi);
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if row_pc(mid)? <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 { None } else { Some(lo - 1) }
}

/// The mapping containing `pc`, by binary search over the first `len` (clamped to
/// [`MAX_MAPPINGS`]) entries of a sorted array, in at most [`MAPPING_SEARCH_STEPS`] + 1 steps;
/// `mapping_at(i)` reads entry `i`.
///
/// The entries are read through a closure, like rows in [`find_row`], so that the BPF side can
/// hide the index's derivation from the verifier (which would otherwise track every search path
/// precisely and never merge them).
#[inline(always)]
pub fn find_mapping(
    len: u32,
    pc: u64,
    mapping_at: &mut impl FnMut(u32) -> Option<Mapping>,
    opaque: &mut impl Opaque,
) -> Option<Mapping> {
    let len = if len as usize > MAX_MAPPINGS {
        MAX_MAPPINGS as u32
    } else {
        len
    };
    let mut lo = 0u32;
    let mut hi = len;
    for _ in 0..=MAPPING_SEARCH_STEPS {
        (lo, hi) = opaque.hide(lo, hi);
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        if mapping_at(mid)?.start <= pc {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo == 0 {
        return None;
    }
    let m = mapping_at(lo.wrapping_sub(1))?;
    if pc < m.end { Some(m) } else { None }
}

/// An identity function the BPF verifier cannot see through.
///
/// The verifier explores every path of a loop iteration by iteration; when a comparison between
/// search bounds can be decided from the ranges it tracks, it marks them precise, and states with
/// different precise bounds never merge, so the paths of a binary search multiply. Passing the
/// bounds through memory it does not track keeps them "some u32": the two outcomes of each step
/// then lead to the same state, and the cost stays linear in the number of steps. Every index is
/// still bounds-checked where it is used. Userspace uses [`Identity`].
pub trait Opaque {
    fn hide(&mut self, lo: u32, hi: u32) -> (u32, u32);
}

/// [`Opaque`] for ordinary code: returns the value.
pub struct Identity;

impl Opaque for Identity {
    #[inline(always)]
    fn hide(&mut self, lo: u32, hi: u32) -> (u32, u32) {
        (lo, hi)
    }
}

/// [`find_mapping`] over a [`ProcessMappings`] in ordinary memory.
pub fn find_in(mappings: &ProcessMappings, pc: u64) -> Option<Mapping> {
    find_mapping(
        mappings.len,
        pc,
        &mut |i| mappings.mappings.get(i as usize).copied(),
        &mut Identity,
    )
}

/// The object address to look up for a frame: return addresses point after the call, which may
/// be the last instruction of a function (`noreturn` callees), so callers are looked up at
/// `pc - 1`.
#[inline(always)]
pub fn lookup_address(mapping: &Mapping, pc: u64, leaf: bool) -> u64 {
    let pc = if leaf { pc } else { pc.wrapping_sub(1) };
    pc.wrapping_sub(mapping.bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(words: &[(u64, u64)]) -> impl FnMut(u64) -> Option<u64> + '_ {
        move |addr| words.iter().find(|(a, _)| *a == addr).map(|(_, v)| *v)
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<UnwindRow>(), 12);
        assert_eq!(core::mem::size_of::<PackedRow>(), 8);
        assert_eq!(core::mem::size_of::<PageKey>(), 8);
        assert_eq!(core::mem::size_of::<PageExtent>(), 8);
        assert_eq!(core::mem::size_of::<Mapping>(), 32);
        assert_eq!(
            core::mem::size_of::<ProcessMappings>(),
            8 + 32 * MAX_MAPPINGS
        );
        assert_eq!(core::mem::size_of::<Regs>(), 32);
    }

    fn find_row_in(len: u32, pc: u32, at: &mut impl FnMut(u32) -> Option<u32>) -> Option<u32> {
        find_row(len, pc, at, &mut Identity)
    }

    #[test]
    fn find_row_returns_the_last_row_at_or_before() {
        let pcs = [0x100u32, 0x110, 0x120, 0x200];
        let mut at = |i: u32| pcs.get(i as usize).copied();
        assert_eq!(find_row_in(4, 0xff, &mut at), None);
        assert_eq!(find_row_in(4, 0x100, &mut at), Some(0));
        assert_eq!(find_row_in(4, 0x11f, &mut at), Some(1));
        assert_eq!(find_row_in(4, 0x120, &mut at), Some(2));
        assert_eq!(find_row_in(4, 0x10000, &mut at), Some(3));
        assert_eq!(find_row_in(0, 0x100, &mut at), None);
    }

    #[test]
    fn find_row_covers_a_full_page() {
        let len = MAX_ROWS_PER_PAGE;
        let mut at = |i: u32| Some(i);
        assert_eq!(find_row_in(len, len - 1, &mut at), Some(len - 1));
        assert_eq!(find_row_in(len, 0, &mut at), Some(0));
        assert_eq!(find_row_in(len, 12_345, &mut at), Some(12_345));
    }

    #[test]
    fn find_mapping_respects_ends_and_gaps() {
        let mut pm = ProcessMappings {
            len: 2,
            ..ProcessMappings::default()
        };
        pm.mappings[0] = Mapping {
            start: 0x1000,
            end: 0x2000,
            bias: 0x1000,
            table_id: 1,
            _pad: 0,
        };
        pm.mappings[1] = Mapping {
            start: 0x5000,
            end: 0x6000,
            bias: 0x4000,
            table_id: 2,
            _pad: 0,
        };
        assert_eq!(find_in(&pm, 0xfff), None);
        assert_eq!(find_in(&pm, 0x1000).map(|m| m.table_id), Some(1));
        assert_eq!(find_in(&pm, 0x2000), None);
        assert_eq!(find_in(&pm, 0x5fff).map(|m| m.table_id), Some(2));
        pm.len = 1000; // a corrupt length is clamped, never indexes out of bounds
        let _ = find_in(&pm, 0x5fff);
    }

    #[test]
    fn x86_64_step_after_push_rbp() {
        // After `push rbp`: CFA = rsp + 16, rbp saved at CFA - 16, return address at CFA - 8.
        let row = UnwindRow {
            pc: 0,
            kind: kind::CFA_SP,
            _pad: 0,
            cfa_offset: 16,
            fp_offset: -16,
            ra_offset: -8,
        };
        let regs = Regs {
            pc: 0x401001,
            sp: 0x7000,
            fp: 0x1234,
            lr: 0,
        };
        let words = [(0x7000, 0xaaaa), (0x7008, 0x401234)];
        let next = step(arch::X86_64, &row, &regs, true, &mut stack(&words))
            .unwrap()
            .unwrap();
        assert_eq!(
            next,
            Regs {
                pc: 0x401234,
                sp: 0x7010,
                fp: 0xaaaa,
                lr: 0x401234
            }
        );
    }

    #[test]
    fn x86_64_plt_rule_adds_the_pushed_word() {
        let row = UnwindRow {
            pc: 0,
            kind: kind::PLT,
            _pad: 0,
            cfa_offset: 8,
            fp_offset: 0,
            ra_offset: -8,
        };
        let words = [(0x7000, 0x401111), (0x7008, 0x402222)];
        let before = Regs {
            pc: 0x1000 + 6,
            sp: 0x7000,
            fp: 1,
            lr: 0,
        };
        assert_eq!(
            step(arch::X86_64, &row, &before, true, &mut stack(&words))
                .unwrap()
                .unwrap()
                .pc,
            0x401111
        );
        let after = Regs {
            pc: 0x1000 + 11,
            sp: 0x7000,
            fp: 1,
            lr: 0,
        };
        assert_eq!(
            step(arch::X86_64, &row, &after, true, &mut stack(&words))
                .unwrap()
                .unwrap()
                .pc,
            0x402222
        );
    }

    #[test]
    fn go_arm64_frames_keep_the_return_address_at_sp_and_the_frame_pointer_below_it() {
        let row = UnwindRow {
            pc: 0,
            kind: kind::GO_ARM64,
            _pad: 0,
            cfa_offset: 0,
            fp_offset: 0,
            ra_offset: 0,
        };
        let regs = Regs {
            pc: 0x4000,
            sp: 0x7000,
            fp: 0x7100,
            lr: 0x5000,
        };
        let mut none = |_| None;
        // A frameless leaf: the return address is still in x30, nothing moved.
        let next = step(arch::AARCH64, &row, &regs, true, &mut none)
            .unwrap()
            .unwrap();
        assert_eq!((next.pc, next.sp, next.fp), (0x5000, 0x7000, 0x7100));
        assert_eq!(
            step(arch::AARCH64, &row, &regs, false, &mut none),
            Err(Stop::Unsupported),
            "only the leaf may still hold its return address in x30"
        );
        // After `MOVD.W R30, -48(RSP); MOVD R29, -8(RSP)`: x30 at [SP], x29 at [SP - 8], and the
        // caller's SP 48 bytes up.
        let row = UnwindRow {
            cfa_offset: 48,
            ..row
        };
        let words = [(0x7000, 0x6000), (0x6ff8, 0x7300)];
        let next = step(arch::AARCH64, &row, &regs, false, &mut stack(&words))
            .unwrap()
            .unwrap();
        assert_eq!((next.pc, next.sp, next.fp), (0x6000, 0x7030, 0x7300));
        assert_eq!(
            step(arch::AARCH64, &row, &regs, false, &mut none),
            Err(Stop::ReadFault)
        );
    }

    #[test]
    fn aarch64_leaf_uses_the_link_register_only_in_the_leaf() {
        let row = UnwindRow {
            pc: 0,
            kind: kind::CFA_SP,
            _pad: 0,
            cfa_offset: 0,
            fp_offset: 0,
            ra_offset: 0,
        };
        let regs = Regs {
            pc: 0x4000,
            sp: 0x7000,
            fp: 0x7100,
            lr: 0x0012_0000_0000_5000,
        };
        let mut none = |_| None;
        // A leaf that has not touched the stack: CFA == SP, return address in x30.
        let next = step(arch::AARCH64, &row, &regs, true, &mut none)
            .unwrap()
            .unwrap();
        assert_eq!(
            next,
            Regs {
                pc: 0x5000,
                sp: 0x7000,
                fp: 0x7100,
                lr: 0x5000
            },
            "PAC bits stripped"
        );
        assert_eq!(
            step(arch::AARCH64, &row, &regs, false, &mut none),
            Err(Stop::Unsupported)
        );
        // After `stp x29, x30, [sp, #-16]!`: CFA = SP + 16, x29 at CFA - 16, x30 at CFA - 8.
        let row = UnwindRow {
            cfa_offset: 16,
            fp_offset: -16,
            ra_offset: -8,
            ..row
        };
        let words = [(0x7000, 0x7200), (0x7008, 0x6000)];
        let next = step(arch::AARCH64, &row, &regs, false, &mut stack(&words))
            .unwrap()
            .unwrap();
        assert_eq!(
            next,
            Regs {
                pc: 0x6000,
                sp: 0x7010,
                fp: 0x7200,
                lr: 0x6000
            }
        );
    }

    #[test]
    fn frame_pointer_step_and_end() {
        let regs = Regs {
            pc: 0x4000,
            sp: 0x7000,
            fp: 0x7020,
            lr: 0,
        };
        let words = [(0x7020, 0x7080), (0x7028, 0x5555)];
        let next = step_frame_pointer(arch::X86_64, &regs, &mut stack(&words))
            .unwrap()
            .unwrap();
        assert_eq!(
            next,
            Regs {
                pc: 0x5555,
                sp: 0x7030,
                fp: 0x7080,
                lr: 0x5555
            }
        );
        let bottom = Regs { fp: 0, ..regs };
        assert_eq!(
            step_frame_pointer(arch::X86_64, &bottom, &mut stack(&words)),
            Ok(None)
        );
        let below = Regs { fp: 0x6000, ..regs };
        assert_eq!(
            step_frame_pointer(arch::X86_64, &below, &mut stack(&words)),
            Err(Stop::NoProgress)
        );
        let unreadable = Regs { fp: 0x9000, ..regs };
        assert_eq!(
            step_frame_pointer(arch::X86_64, &unreadable, &mut stack(&words)),
            Err(Stop::ReadFault)
        );
    }

    #[test]
    fn packing_round_trips_and_refuses_what_does_not_fit() {
        let row = UnwindRow {
            pc: 0x0003_1234,
            kind: kind::CFA_FP,
            _pad: 0,
            cfa_offset: 16,
            fp_offset: -16,
            ra_offset: -8,
        };
        let packed = PackedRow::pack(&row);
        assert_eq!(packed.pc, 0x1234);
        assert_eq!(packed.unpack(0x0003_0000), row);
        let odd = UnwindRow {
            fp_offset: -12,
            ..row
        };
        assert_eq!(PackedRow::pack(&odd).kind, kind::UNSUPPORTED);
        let far = UnwindRow {
            ra_offset: -8 * 200,
            ..row
        };
        assert_eq!(PackedRow::pack(&far).kind, kind::UNSUPPORTED);
        let big_frame = UnwindRow {
            cfa_offset: 30_000,
            ..row
        };
        assert_eq!(PackedRow::pack(&big_frame).unpack(0x3_0000), big_frame);
    }

    #[test]
    fn end_row_completes() {
        let row = UnwindRow {
            kind: kind::END,
            ..UnwindRow::default()
        };
        let regs = Regs::default();
        assert_eq!(
            step(arch::X86_64, &row, &regs, false, &mut |_| None),
            Ok(None)
        );
    }
}
