//! Types and constants shared by the kernel-side sampler (`profiler-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding so both sides agree on the layout byte for
//! byte; flags are `u32`, never `bool`.
#![no_std]

pub mod unwind;

/// Entries in each generation's stack-trace map. Stacks are drained every tick, so this only has to
/// hold the distinct stacks of one tick; the kernel's stack map is a hash table without chaining, so
/// it is sized well above that to keep `-EEXIST` collisions rare (they are counted in [`Stat`]).
pub const STACK_MAP_ENTRIES: u32 = 16_384;

/// Entries in each generation's per-CPU count map (distinct `(tgid, user stack, kernel stack)` per tick).
pub const COUNT_MAP_ENTRIES: u32 = 16_384;

/// Processes the program remembers having announced (LRU: the least recently sampled go first).
pub const KNOWN_PROCESS_ENTRIES: u32 = 65_536;

/// Bytes of the ring buffer announcing newly seen processes (4-byte tgids plus 8-byte headers:
/// ~5,000 announcements before the agent reads them; it sleeps on the ring, which wakes it when
/// an announcement lands in an empty ring, and reads it at once).
pub const NEW_PROCESS_RING_BYTES: u32 = 64 * 1024;

/// Rows per element of the unwind-row array: the agent writes a chunk per syscall, and page
/// extents start on a chunk boundary.
pub const UNWIND_CHUNK_ROWS: u32 = 64;

/// Default chunks in the unwind-row array: 49,152 × 64 rows × 8 bytes = 24 MiB of kernel memory,
/// 3.1 million rows: glibc takes 28,000, the largest C++ libraries (libLLVM, librustc_driver)
/// 1.2 million each. The agent sets the real size at load time (`--unwind-table-mib`). Tables
/// that do not fit are not loaded (counted); their frames unwind by frame pointers.
pub const UNWIND_ROW_CHUNKS: u32 = 49_152;

/// Bytes of one element of the unwind-row array.
pub const UNWIND_CHUNK_BYTES: u32 = UNWIND_CHUNK_ROWS * 8;

/// Entries in the page map (64 KiB pages of unwind tables): 4 GiB of code.
pub const UNWIND_PAGE_ENTRIES: u32 = 65_536;

/// Processes whose mappings the unwinder knows (4 KiB each, preallocated: 4 MiB). Others unwind by
/// frame pointers.
pub const UNWIND_PROCESS_ENTRIES: u32 = 1_024;

/// Distinct table-unwound user stacks per generation (1,040 bytes each, preallocated). The agent
/// sizes the map at load time from the CPU count and frequency (2,048 on a small node); this is
/// only the object's placeholder. When full, a sample's user stack is recorded as lost (counted).
pub const UNWOUND_STACK_ENTRIES: u32 = 2_048;

/// `SampleKey::user_stack_id` of a stack unwound with tables: the frames are in the
/// `UNWOUND_STACKS_n` map under `SampleKey::unwound_stack`.
pub const UNWOUND_STACK_ID: i32 = i32::MAX;

/// Names of the maps and program in the object, used by the loader.
pub mod names {
    pub const PROGRAM: &str = "kalypso_sample";
    pub const STACKS: [&str; 2] = ["STACKS_0", "STACKS_1"];
    pub const COUNTS: [&str; 2] = ["COUNTS_0", "COUNTS_1"];
    pub const STATS: &str = "STATS";
    pub const CONTROL: &str = "CONTROL";
    pub const KNOWN: &str = "KNOWN";
    pub const NEW_PROCESSES: &str = "NEW_PROCESSES";
    /// The tail-called program that unwinds user stacks with tables.
    pub const UNWIND_PROGRAM: &str = "kalypso_unwind";
    pub const PROGRAMS: &str = "PROGRAMS";
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    pub const UNWIND_PAGES: &str = "UNWIND_PAGES";
    pub const PROCESS_MAPPINGS: &str = "PROCESS_MAPPINGS";
    pub const UNWOUND_STACKS: [&str; 2] = ["UNWOUND_STACKS_0", "UNWOUND_STACKS_1"];
    /// Read-only global: 1 = unwind user stacks with tables where the process has them.
    pub const UNWIND_TABLES: &str = "UNWIND_TABLES";
    /// Read-only global: [`crate::unwind::arch`] of the kernel (layout of the saved user registers).
    pub const ARCH: &str = "ARCH";
    /// Read-only global: only samples of this tgid are counted (0 = every process).
    pub const TARGET_TGID: &str = "TARGET_TGID";
    /// Read-only global: the agent's own tgid, never counted.
    pub const SELF_TGID: &str = "SELF_TGID";
}

/// Key of the per-CPU count maps: one entry per distinct (process, user stack, kernel stack).
///
/// A stack id below zero is `-errno` from `bpf_get_stackid`: the sample is still counted, with the
/// stack recorded as missing, so no sample is lost because its stack was.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleKey {
    pub tgid: u32,
    /// Stack-map id, `-errno`, or [`UNWOUND_STACK_ID`].
    pub user_stack_id: i32,
    /// Stack-map id, `-errno`, or [`NO_KERNEL_STACK`] (the sample interrupted user mode).
    pub kernel_stack_id: i32,
    pub _pad: u32,
    /// Key in `UNWOUND_STACKS_n` (a hash of the frames) when `user_stack_id` is
    /// [`UNWOUND_STACK_ID`], else 0.
    pub unwound_stack: u64,
    /// The sampled thread's name (`comm`, NUL-padded; all zero if unreadable). Threads of one
    /// name share entries, so a pool of workers costs one entry per stack, not one per thread.
    pub thread: [u8; THREAD_NAME_LEN],
}

/// Bytes of a thread name in [`SampleKey`]: the kernel's `TASK_COMM_LEN`.
pub const THREAD_NAME_LEN: usize = 16;

/// A user stack unwound with tables, leaf first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwoundStack {
    pub len: u32,
    pub _pad: u32,
    pub frames: [u64; unwind::MAX_UNWOUND_FRAMES],
}

/// One element of the unwind-row array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowChunk {
    pub rows: [unwind::PackedRow; UNWIND_CHUNK_ROWS as usize],
}

impl Default for RowChunk {
    fn default() -> Self {
        Self {
            rows: [unwind::PackedRow::default(); UNWIND_CHUNK_ROWS as usize],
        }
    }
}

/// Control block (array map, one entry) written by the agent and read by every sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// Which pair of maps (`STACKS_n`, `COUNTS_n`) the program writes to: 0 or 1. The agent flips it
    /// and then drains the other pair, so no increment races with a drain.
    pub generation: u32,
    pub _pad: u32,
}

/// Indices of the per-CPU statistics array: every path through the program bumps one or more.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Program invocations (every timer tick on every CPU).
    Ticks = 0,
    /// The CPU was idle (pid 0): skipped before any stack walk.
    Idle = 1,
    /// Another process than the target (`--pid` mode) or the agent itself.
    Filtered = 2,
    /// Samples added to a count map.
    Counted = 3,
    /// No user stack: the sample hit a kernel thread or the walk faulted.
    UserStackFault = 4,
    /// User stack lost to a stack-map bucket collision.
    UserStackCollision = 5,
    /// User stack lost for another reason (e.g. map full).
    UserStackOther = 6,
    /// No kernel stack: the sample interrupted user mode (normal).
    KernelStackUserMode = 7,
    /// Kernel stack lost to a stack-map bucket collision.
    KernelStackCollision = 8,
    /// Kernel stack lost for another reason.
    KernelStackOther = 9,
    /// The count map was full: the sample itself is lost.
    CountMapFull = 10,
    /// The control map could not be read (should never happen).
    ControlMissing = 11,
    /// A process sampled for the first time was announced to the agent, which reads its
    /// mappings at once, so that even short-lived processes symbolize.
    NewProcess = 12,
    /// The announcement ring buffer was full: the agent reads that process's mappings at the
    /// next drain instead (if it still lives).
    NewProcessLost = 13,
    /// Samples whose user stack was unwound with tables (the process had them loaded).
    UnwindStarted = 14,
    /// ...that reached the outermost frame.
    UnwindComplete = 15,
    /// ...that stopped at the frame limit.
    UnwindTruncated = 16,
    /// ...that stopped because reading the stack faulted.
    UnwindReadFault = 17,
    /// ...that stopped at a rule the unwinder cannot follow.
    UnwindUnsupported = 18,
    /// ...that stopped because the stack pointer did not move up (corrupt stack or table).
    UnwindNoProgress = 19,
    /// Frames unwound by frame pointers because no table covered the address (JIT code, objects
    /// without CFI, tables not loaded).
    UnwindFramePointerFrames = 20,
    /// Tail calls into the unwinder that failed: the stack is cut there.
    UnwindTailCallFailed = 21,
    /// The unwound-stack map was full: the sample counts with its user stack lost.
    UnwoundStackMapFull = 22,
    /// The sample interrupted kernel mode but its kernel stack could not be walked (`-EFAULT`
    /// from `bpf_get_stackid`): the sample counts with its kernel stack lost.
    KernelStackFault = 23,
    /// The table unwinder could not start: the task's saved user registers could not be read.
    /// The user stack is walked by frame pointers instead.
    UnwindRegsUnreadable = 24,
}

impl Stat {
    pub const COUNT: u32 = 25;
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Ticks,
        Stat::Idle,
        Stat::Filtered,
        Stat::Counted,
        Stat::UserStackFault,
        Stat::UserStackCollision,
        Stat::UserStackOther,
        Stat::KernelStackUserMode,
        Stat::KernelStackCollision,
        Stat::KernelStackOther,
        Stat::CountMapFull,
        Stat::ControlMissing,
        Stat::NewProcess,
        Stat::NewProcessLost,
        Stat::UnwindStarted,
        Stat::UnwindComplete,
        Stat::UnwindTruncated,
        Stat::UnwindReadFault,
        Stat::UnwindUnsupported,
        Stat::UnwindNoProgress,
        Stat::UnwindFramePointerFrames,
        Stat::UnwindTailCallFailed,
        Stat::UnwoundStackMapFull,
        Stat::KernelStackFault,
        Stat::UnwindRegsUnreadable,
    ];

    /// Stable snake_case name, used in summaries and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Ticks => "ticks",
            Stat::Idle => "idle",
            Stat::Filtered => "filtered",
            Stat::Counted => "counted",
            Stat::UserStackFault => "user_stack_fault",
            Stat::UserStackCollision => "user_stack_collision",
            Stat::UserStackOther => "user_stack_other",
            Stat::KernelStackUserMode => "kernel_stack_user_mode",
            Stat::KernelStackCollision => "kernel_stack_collision",
            Stat::KernelStackOther => "kernel_stack_other",
            Stat::CountMapFull => "count_map_full",
            Stat::ControlMissing => "control_missing",
            Stat::NewProcess => "new_process",
            Stat::NewProcessLost => "new_process_lost",
            Stat::UnwindStarted => "unwind_started",
            Stat::UnwindComplete => "unwind_complete",
            Stat::UnwindTruncated => "unwind_truncated",
            Stat::UnwindReadFault => "unwind_read_fault",
            Stat::UnwindUnsupported => "unwind_unsupported",
            Stat::UnwindNoProgress => "unwind_no_progress",
            Stat::UnwindFramePointerFrames => "unwind_frame_pointer_frames",
            Stat::UnwindTailCallFailed => "unwind_tail_call_failed",
            Stat::UnwoundStackMapFull => "unwound_stack_map_full",
            Stat::KernelStackFault => "kernel_stack_fault",
            Stat::UnwindRegsUnreadable => "unwind_regs_unreadable",
        }
    }
}

/// `errno` values `bpf_get_stackid` returns (negated) that the agent tells apart.
pub mod errno {
    pub const EFAULT: i32 = 14;
    pub const EEXIST: i32 = 17;
    pub const ENOMEM: i32 = 12;
}

/// `SampleKey::kernel_stack_id` of a sample that interrupted user mode: it has no kernel stack
/// (normal, unlike a `-EFAULT` from walking a kernel stack).
pub const NO_KERNEL_STACK: i32 = i32::MIN;

/// A `bpf_get_stackid` result as a stack id (`-errno` when the stack is missing) and the
/// [`Stat`] a missing stack counts under: `fault` for `EFAULT`, `collision` for `EEXIST`,
/// `other` for the rest.
#[inline(always)]
pub fn stack_id(
    result: Result<i64, i32>,
    fault: Stat,
    collision: Stat,
    other: Stat,
) -> (i32, Option<Stat>) {
    match result {
        Ok(id) => (id as i32, None),
        Err(err) => {
            let errno = -err;
            let stat = if errno == errno::EFAULT {
                fault
            } else if errno == errno::EEXIST {
                collision
            } else {
                other
            };
            (err, Some(stat))
        }
    }
}

/// The kernel-stack id of a sample and what it counts under. A sample that interrupted user
/// mode has none ([`NO_KERNEL_STACK`], [`Stat::KernelStackUserMode`]) and `walk` is not called
/// (it would cost a callchain buffer and fail); otherwise `walk`'s result, with a fault counted
/// as [`Stat::KernelStackFault`].
#[inline(always)]
pub fn kernel_stack_id(
    user_mode: bool,
    walk: impl FnOnce() -> Result<i64, i32>,
) -> (i32, Option<Stat>) {
    if user_mode {
        return (NO_KERNEL_STACK, Some(Stat::KernelStackUserMode));
    }
    stack_id(
        walk(),
        Stat::KernelStackFault,
        Stat::KernelStackCollision,
        Stat::KernelStackOther,
    )
}

/// What a sample of a process with unwind tables counts when the table unwinder does not take
/// it over (it is then walked by frame pointers): whether its user registers could be read.
#[inline(always)]
pub const fn unwind_fallback(regs_read: bool) -> Stat {
    if regs_read {
        Stat::UnwindTailCallFailed
    } else {
        Stat::UnwindRegsUnreadable
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are `repr(C)`, `Copy`, contain only integers and have no implicit padding.
    unsafe impl aya::Pod for super::SampleKey {}
    unsafe impl aya::Pod for super::Control {}
    unsafe impl aya::Pod for super::UnwoundStack {}
    unsafe impl aya::Pod for super::RowChunk {}
    unsafe impl aya::Pod for super::unwind::PageKey {}
    unsafe impl aya::Pod for super::unwind::PageExtent {}
    unsafe impl aya::Pod for super::unwind::ProcessMappings {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<SampleKey>(), 40);
        assert_eq!(
            core::mem::size_of::<UnwoundStack>(),
            8 + 8 * unwind::MAX_UNWOUND_FRAMES
        );
        assert_eq!(
            core::mem::size_of::<RowChunk>(),
            UNWIND_CHUNK_BYTES as usize
        );
        assert_eq!(core::mem::size_of::<Control>(), 8);
    }

    #[test]
    fn a_kernel_stack_fault_in_kernel_mode_is_not_the_user_mode_case() {
        let (id, stat) = kernel_stack_id(false, || Err(-errno::EFAULT));
        assert_eq!((id, stat), (-errno::EFAULT, Some(Stat::KernelStackFault)));
        let (id, stat) = kernel_stack_id(true, || panic!("no walk for a user-mode sample"));
        assert_eq!(
            (id, stat),
            (NO_KERNEL_STACK, Some(Stat::KernelStackUserMode))
        );
        assert_eq!(kernel_stack_id(false, || Ok(7)), (7, None));
        assert_eq!(
            kernel_stack_id(false, || Err(-errno::EEXIST)),
            (-errno::EEXIST, Some(Stat::KernelStackCollision))
        );
    }

    #[test]
    fn a_failed_register_read_is_not_a_failed_tail_call() {
        assert_eq!(unwind_fallback(false), Stat::UnwindRegsUnreadable);
        assert_eq!(unwind_fallback(true), Stat::UnwindTailCallFailed);
    }

    #[test]
    fn stat_table_is_complete_and_ordered() {
        for (i, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, i);
        }
    }
}
