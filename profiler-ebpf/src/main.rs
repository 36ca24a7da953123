//! Kalypso's sampler. Runs on every CPU at each tick of the software cpu-clock and counts
//! `(tgid, user stack, kernel stack)` in per-CPU hash maps, so increments never race across CPUs.
//!
//! Maps come in two generations; the agent flips `CONTROL.generation` and drains the pair the
//! program no longer writes to, so a drain never loses an increment.
//!
//! User stacks of processes the agent loaded unwind tables for are walked by `kalypso_unwind`
//! instead of `bpf_get_stackid`: it follows `.eh_frame`-derived rules from the saved user
//! registers, [`FRAMES_PER_PROGRAM`] frames per run, tail-calling itself for more, and falls
//! back to frame pointers where no table covers an address. The rules and the step are shared
//! with the agent's replay tests (`profiler_common::unwind`).
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_F_FAST_STACK_CMP, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::{map, perf_event},
    maps::{
        Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf, StackTrace,
    },
    programs::{PerfEventContext, tracing::StackIdContext},
};
use profiler_common::{
    COUNT_MAP_ENTRIES, Control, KNOWN_PROCESS_ENTRIES, NEW_PROCESS_RING_BYTES, RowChunk,
    STACK_MAP_ENTRIES, SampleKey, Stat, THREAD_NAME_LEN, UNWIND_CHUNK_ROWS, UNWIND_PAGE_ENTRIES,
    UNWIND_PROCESS_ENTRIES, UNWIND_ROW_CHUNKS, UNWOUND_STACK_ENTRIES, UNWOUND_STACK_ID,
    UnwoundStack, errno,
    unwind::{
        self, FRAMES_PER_PROGRAM, MAX_UNWOUND_FRAMES, PackedRow, PageExtent, PageKey,
        ProcessMappings, Regs, Stop, TABLE_PAGE_BYTES, TABLE_PAGE_SHIFT, UnwindRow, arch, kind,
    },
};

#[unsafe(no_mangle)]
static TARGET_TGID: Global<u32> = Global::new(0);

#[unsafe(no_mangle)]
static SELF_TGID: Global<u32> = Global::new(0);

/// 1: unwind user stacks with tables for processes in `PROCESS_MAPPINGS`.
#[unsafe(no_mangle)]
static UNWIND_TABLES: Global<u32> = Global::new(0);

/// `unwind::arch` of this kernel: where the saved user registers are.
#[unsafe(no_mangle)]
static ARCH: Global<u32> = Global::new(arch::X86_64);

#[map]
static STACKS_0: StackTrace = StackTrace::with_max_entries(STACK_MAP_ENTRIES, 0);
#[map]
static STACKS_1: StackTrace = StackTrace::with_max_entries(STACK_MAP_ENTRIES, 0);

#[map]
static COUNTS_0: PerCpuHashMap<SampleKey, u64> =
    PerCpuHashMap::with_max_entries(COUNT_MAP_ENTRIES, 0);
#[map]
static COUNTS_1: PerCpuHashMap<SampleKey, u64> =
    PerCpuHashMap::with_max_entries(COUNT_MAP_ENTRIES, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

#[map]
static CONTROL: Array<Control> = Array::with_max_entries(1, 0);

/// Processes already announced to the agent.
#[map]
static KNOWN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(KNOWN_PROCESS_ENTRIES, 0);

/// tgids of processes sampled for the first time, so the agent can read their mappings while
/// they still exist.
#[map]
static NEW_PROCESSES: RingBuf = RingBuf::with_byte_size(NEW_PROCESS_RING_BYTES, 0);

/// Slot 0: `kalypso_unwind`.
#[map]
static PROGRAMS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Unwind rules of every loaded object, in chunks; page extents index rows.
#[map]
static UNWIND_ROWS: Array<RowChunk> = Array::with_max_entries(UNWIND_ROW_CHUNKS, 0);

/// (table, 64 KiB page of the object) → the rows covering that page.
#[map]
static UNWIND_PAGES: HashMap<PageKey, PageExtent> =
    HashMap::with_max_entries(UNWIND_PAGE_ENTRIES, 0);

/// tgid → its executable mappings that have tables.
#[map]
static PROCESS_MAPPINGS: HashMap<u32, ProcessMappings> =
    HashMap::with_max_entries(UNWIND_PROCESS_ENTRIES, 0);

/// Table-unwound user stacks by hash of their frames, per generation.
#[map]
static UNWOUND_STACKS_0: HashMap<u64, UnwoundStack> =
    HashMap::with_max_entries(UNWOUND_STACK_ENTRIES, 0);
#[map]
static UNWOUND_STACKS_1: HashMap<u64, UnwoundStack> =
    HashMap::with_max_entries(UNWOUND_STACK_ENTRIES, 0);

/// The unwind in progress on this CPU, carried across tail calls.
#[repr(C)]
struct UnwindState {
    regs: Regs,
    key: SampleKey,
    generation: u32,
    _pad: u32,
    stack: UnwoundStack,
}

#[map]
static UNWIND_STATE: PerCpuArray<UnwindState> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU word that search indices pass through, see [`opaque`].
#[map]
static SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Returns `(lo, hi)` unchanged, by way of memory the verifier does not track. Binary-search
/// bounds index arrays, which makes the verifier track them precisely back through every
/// comparison, so it would explore each search path separately (exponentially many); values
/// loaded from a map are just "some u32" to it, and the paths merge. Bounds are still checked at
/// each use. One per-CPU word carries both.
#[inline(always)]
fn opaque(lo: u32, hi: u32) -> (u32, u32) {
    match SCRATCH.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, and these programs cannot be re-entered on the same CPU.
        Some(slot) => unsafe {
            core::ptr::write_volatile(slot, u64::from(lo) | (u64::from(hi) << 32));
            let both = core::ptr::read_volatile(slot);
            (both as u32, (both >> 32) as u32)
        },
        None => (0, 0),
    }
}

#[inline(always)]
fn bump(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, and this program cannot be re-entered on the same CPU.
        unsafe { *slot += 1 };
    }
}

/// Turns a `bpf_get_stackid` result into a stack id, or `-errno` when the stack is missing,
/// counting the reason (the rule is `profiler_common::stack_id`, tested there).
#[inline(always)]
fn counted((id, stat): (i32, Option<Stat>)) -> i32 {
    if let Some(stat) = stat {
        bump(stat);
    }
    id
}

#[perf_event]
pub fn kalypso_sample(ctx: PerfEventContext) -> u32 {
    bump(Stat::Ticks);
    let tgid = ctx.tgid();
    // The idle task: nothing to attribute, and its kernel stack is the costliest to walk.
    if ctx.pid() == 0 {
        bump(Stat::Idle);
        return 0;
    }
    let target = TARGET_TGID.load();
    if (target != 0 && tgid != target) || tgid == SELF_TGID.load() {
        bump(Stat::Filtered);
        return 0;
    }
    if KNOWN.get_ptr(tgid).is_none() {
        // Announce before counting: the agent must see a process before its samples matter.
        // Default flags: the kernel wakes the agent only when the ring was empty (it has
        // caught up), so a burst of new processes costs one wakeup, and an idle agent sleeps.
        if NEW_PROCESSES.output::<u32>(&tgid, 0).is_ok() {
            // Only remember it once the announcement went out, so a full ring is retried.
            let _ = KNOWN.insert(tgid, 1, 0);
            bump(Stat::NewProcess);
        } else {
            bump(Stat::NewProcessLost);
        }
    }
    let Some(control) = CONTROL.get(0) else {
        bump(Stat::ControlMissing);
        return 0;
    };
    let generation = control.generation;
    let stacks = if generation == 0 { &STACKS_0 } else { &STACKS_1 };
    // A tick that interrupted user mode has no kernel stack: asking the kernel for one anyway
    // costs a callchain buffer and comes back with -EFAULT.
    let kernel = counted(profiler_common::kernel_stack_id(
        interrupted_user_mode(&ctx),
        || ctx.get_stackid(stacks, u64::from(BPF_F_FAST_STACK_CMP)),
    ));
    if UNWIND_TABLES.load() != 0 && PROCESS_MAPPINGS.get_ptr(tgid).is_some() {
        let started = start_unwind(tgid, kernel, generation, thread_name(&ctx));
        if started {
            // SAFETY: the context is this program's own.
            unsafe { PROGRAMS.tail_call(&ctx, 0) };
        }
        // Only reached when reading the registers or the tail call failed: fall back to frame
        // pointers for this sample.
        bump(profiler_common::unwind_fallback(started));
    }
    let user = counted(profiler_common::stack_id(
        ctx.get_stackid(stacks, u64::from(BPF_F_USER_STACK | BPF_F_FAST_STACK_CMP)),
        Stat::UserStackFault,
        Stat::UserStackCollision,
        Stat::UserStackOther,
    ));
    count(
        SampleKey {
            tgid,
            user_stack_id: user,
            kernel_stack_id: kernel,
            _pad: 0,
            unwound_stack: 0,
            thread: thread_name(&ctx),
        },
        generation,
    );
    0
}

/// The current thread's name; all zero if the helper fails (it does not, for a running task).
#[inline(always)]
fn thread_name(ctx: &PerfEventContext) -> [u8; THREAD_NAME_LEN] {
    ctx.command().unwrap_or([0; THREAD_NAME_LEN])
}

/// Whether the tick interrupted user mode, from the registers the perf event saved (the context
/// starts with them): x86_64 `cs` (word 17 of `pt_regs`) at privilege level 3; arm64 `pstate`
/// (word 33 of `user_pt_regs`) in EL0.
#[inline(always)]
fn interrupted_user_mode(ctx: &PerfEventContext) -> bool {
    let regs = ctx.as_ptr() as *const u64;
    // SAFETY: both words lie inside the `bpf_perf_event_data` the kernel passes; the verifier
    // checks every context access.
    unsafe {
        if ARCH.load() == arch::AARCH64 {
            *regs.add(33) & 0xf == 0
        } else {
            *regs.add(17) & 3 == 3
        }
    }
}

#[inline(always)]
fn count(key: SampleKey, generation: u32) {
    let counts = if generation == 0 { &COUNTS_0 } else { &COUNTS_1 };
    match counts.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, and this program cannot be re-entered on the same CPU.
        Some(count) => unsafe { *count += 1 },
        None => {
            if counts.insert(&key, &1, 0).is_err() {
                bump(Stat::CountMapFull);
                return;
            }
        }
    }
    bump(Stat::Counted);
}

/// Reads 8 bytes of kernel memory.
#[inline(always)]
fn read_kernel(addr: u64) -> Option<u64> {
    // SAFETY: the helper checks the address and fails cleanly on a fault.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok()
}

/// Reads 8 bytes of the current process's memory.
#[inline(always)]
fn read_user(addr: u64) -> Option<u64> {
    // SAFETY: the helper checks the address and fails cleanly on a fault.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// The user-mode registers of the current task, saved at kernel entry (for a sample that
/// interrupted user mode, these are the interrupted registers themselves).
#[inline(always)]
fn user_regs(arch: u32) -> Option<Regs> {
    // SAFETY: both helpers are valid in perf_event programs (kernel 5.15+) and return a pointer
    // only read through `bpf_probe_read_kernel`.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    if regs == 0 {
        return None;
    }
    // Offsets in `struct pt_regs`: x86_64 ip 128, sp 152, bp 32; arm64 pc 256, sp 248, x29 232,
    // x30 240.
    if arch == arch::AARCH64 {
        Some(Regs {
            pc: read_kernel(regs + 256)?,
            sp: read_kernel(regs + 248)?,
            fp: read_kernel(regs + 232)?,
            lr: read_kernel(regs + 240)?,
        })
    } else {
        Some(Regs {
            pc: read_kernel(regs + 128)?,
            sp: read_kernel(regs + 152)?,
            fp: read_kernel(regs + 32)?,
            lr: 0,
        })
    }
}

/// Fills this CPU's unwind state for a sample of `tgid`; false if the registers are unreadable
/// (or, never seen, this CPU's unwind state is missing).
#[inline(always)]
fn start_unwind(
    tgid: u32,
    kernel: i32,
    generation: u32,
    thread: [u8; THREAD_NAME_LEN],
) -> bool {
    let Some(state) = UNWIND_STATE.get_ptr_mut(0) else {
        return false;
    };
    let Some(regs) = user_regs(ARCH.load()) else {
        return false;
    };
    // SAFETY: per-CPU value, and neither program can be re-entered on the same CPU.
    let state = unsafe { &mut *state };
    state.regs = regs;
    state.key = SampleKey {
        tgid,
        user_stack_id: UNWOUND_STACK_ID,
        kernel_stack_id: kernel,
        _pad: 0,
        unwound_stack: 0,
        thread,
    };
    state.generation = generation;
    state.stack.len = 0;
    bump(Stat::UnwindStarted);
    true
}

/// [`unwind::Opaque`] through [`opaque`].
struct Hidden;

impl unwind::Opaque for Hidden {
    #[inline(always)]
    fn hide(&mut self, lo: u32, hi: u32) -> (u32, u32) {
        opaque(lo, hi)
    }
}

#[inline(always)]
fn row_at(index: u32) -> Option<PackedRow> {
    let chunk = UNWIND_ROWS.get(index / UNWIND_CHUNK_ROWS)?;
    chunk
        .rows
        .get((index % UNWIND_CHUNK_ROWS) as usize)
        .copied()
}

/// The table row for `pc` in `mappings`, if a loaded table covers it.
#[inline(always)]
fn find_rule(mappings: &ProcessMappings, pc: u64, leaf: bool) -> Option<UnwindRow> {
    let mapping = unwind::find_mapping(
        mappings.len,
        pc,
        // Masked (MAX_MAPPINGS is a power of two, and i < len <= MAX_MAPPINGS): LLVM may index
        // with a copy of `i` that a plain bounds check did not cover, which the verifier refuses.
        &mut |i| {
            mappings
                .mappings
                .get((i & (unwind::MAX_MAPPINGS as u32 - 1)) as usize)
                .copied()
        },
        &mut Hidden,
    )?;
    let vaddr = unwind::lookup_address(&mapping, pc, leaf);
    if vaddr > u64::from(u32::MAX) {
        return None;
    }
    let key = PageKey {
        table_id: mapping.table_id,
        page: (vaddr >> TABLE_PAGE_SHIFT) as u32,
    };
    // SAFETY: the agent only deletes pages of tables no process maps any more.
    let extent = unsafe { UNWIND_PAGES.get(&key) }?;
    let start = extent.start;
    let page_start = (vaddr as u32) & !(TABLE_PAGE_BYTES as u32 - 1);
    let index = unwind::find_row(
        extent.len,
        vaddr as u32,
        &mut |i| row_at(start + i).map(|row| page_start | u32::from(row.pc)),
        &mut Hidden,
    )?;
    row_at(start + index).map(|row| row.unpack(page_start))
}

/// Recovers the caller's registers: with the table row where there is one, else by frame pointer.
#[inline(always)]
fn unwind_frame(
    arch: u32,
    mappings: &ProcessMappings,
    regs: &Regs,
    leaf: bool,
) -> Result<Option<Regs>, Stop> {
    let mut read = read_user;
    match find_rule(mappings, regs.pc, leaf) {
        Some(row) if row.kind != kind::NO_INFO => unwind::step(arch, &row, regs, leaf, &mut read),
        _ => {
            bump(Stat::UnwindFramePointerFrames);
            unwind::step_frame_pointer(arch, regs, &mut read)
        }
    }
}

/// Walks up to [`FRAMES_PER_PROGRAM`] user frames from this CPU's unwind state, then tail-calls
/// itself, until the stack ends; then counts the sample.
#[perf_event]
pub fn kalypso_unwind(ctx: PerfEventContext) -> u32 {
    let Some(state) = UNWIND_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU value, and neither program can be re-entered on the same CPU.
    let state = unsafe { &mut *state };
    let arch = ARCH.load();
    // SAFETY: the agent replaces a process's entry whole; a stale read only unwinds with the
    // previous mappings.
    let Some(mappings) = (unsafe { PROCESS_MAPPINGS.get(&state.key.tgid) }) else {
        finish(state);
        return 0;
    };
    for _ in 0..FRAMES_PER_PROGRAM {
        let len = state.stack.len as usize;
        let Some(slot) = state.stack.frames.get_mut(len) else {
            bump(Stat::UnwindTruncated);
            finish(state);
            return 0;
        };
        *slot = state.regs.pc;
        state.stack.len += 1;
        match unwind_frame(arch, mappings, &state.regs, len == 0) {
            Ok(Some(next)) => state.regs = next,
            Ok(None) => {
                bump(Stat::UnwindComplete);
                finish(state);
                return 0;
            }
            Err(stop) => {
                bump(match stop {
                    Stop::Complete => Stat::UnwindComplete,
                    Stop::ReadFault => Stat::UnwindReadFault,
                    Stop::Unsupported => Stat::UnwindUnsupported,
                    Stop::NoProgress => Stat::UnwindNoProgress,
                });
                finish(state);
                return 0;
            }
        }
    }
    if state.stack.len as usize >= MAX_UNWOUND_FRAMES {
        bump(Stat::UnwindTruncated);
        finish(state);
        return 0;
    }
    // SAFETY: the context is this program's own.
    unsafe { PROGRAMS.tail_call(&ctx, 0) };
    bump(Stat::UnwindTailCallFailed);
    finish(state);
    0
}

/// A 64-bit hash of the frames (and their number), the key of the unwound-stack maps.
#[inline(always)]
fn hash_frames(stack: &UnwoundStack) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ u64::from(stack.len);
    for i in 0..MAX_UNWOUND_FRAMES {
        if i >= stack.len as usize {
            break;
        }
        let Some(frame) = stack.frames.get(i) else {
            break;
        };
        hash = (hash ^ *frame).wrapping_mul(0x0000_0100_0000_01b3);
        hash ^= hash >> 29;
    }
    hash
}

/// Stores the unwound stack (once per distinct stack) and counts the sample.
#[inline(always)]
fn finish(state: &mut UnwindState) {
    let stacks = if state.generation == 0 {
        &UNWOUND_STACKS_0
    } else {
        &UNWOUND_STACKS_1
    };
    let hash = hash_frames(&state.stack);
    let mut key = state.key;
    if stacks.get_ptr(&hash).is_none() {
        match stacks.insert(&hash, &state.stack, u64::from(BPF_NOEXIST)) {
            Ok(()) => {}
            // Another CPU stored the same stack meanwhile.
            Err(err) if -(err as i64) == i64::from(errno::EEXIST) => {}
            Err(_) => {
                bump(Stat::UnwoundStackMapFull);
                key.user_stack_id = -errno::ENOMEM;
                count(key, state.generation);
                return;
            }
        }
    }
    key.unwound_stack = hash;
    count(key, state.generation);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
