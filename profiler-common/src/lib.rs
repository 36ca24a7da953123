//! Types and constants shared by the kernel-side sampler (`profiler-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding so both sides agree on the layout byte for
//! byte; flags are `u32`, never `bool`.
#![no_std]

pub mod unwind;

/// Maximum number of frames the kernel records per stack (`PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_DEPTH: usize = 127;

/// Entries in each generation's stack-trace map. Stacks are drained every tick, so this only has to
/// hold the distinct stacks of one tick; the kernel's stack map is a hash table without chaining, so
/// it is sized well above that to keep `-EEXIST` collisions rare (they are counted in [`Stat`]).
pub const STACK_MAP_ENTRIES: u32 = 16_384;

/// Entries in each generation's per-CPU count map (distinct `(tgid, user stack, kernel stack)` per tick).
pub const COUNT_MAP_ENTRIES: u32 = 16_384;

/// Processes the program remembers having announced (LRU: the least recently sampled go first).
pub const KNOWN_PROCESS_ENTRIES: u32 = 65_536;

/// Bytes of the ring buffer announcing newly seen processes (4-byte tgids plus 8-byte headers:
/// ~5,000 announcements between two reads, which happen every 20 ms).
pub const NEW_PROCESS_RING_BYTES: u32 = 64 * 1024;

/// Names of the maps and program in the object, used by the loader.
pub mod names {
    pub const PROGRAM: &str = "kalypso_sample";
    pub const STACKS: [&str; 2] = ["STACKS_0", "STACKS_1"];
    pub const COUNTS: [&str; 2] = ["COUNTS_0", "COUNTS_1"];
    pub const STATS: &str = "STATS";
    pub const CONTROL: &str = "CONTROL";
    pub const KNOWN: &str = "KNOWN";
    pub const NEW_PROCESSES: &str = "NEW_PROCESSES";
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
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub _pad: u32,
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
}

impl Stat {
    pub const COUNT: u32 = 14;
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
        }
    }
}

/// `errno` values `bpf_get_stackid` returns (negated) that the agent tells apart.
pub mod errno {
    pub const EFAULT: i32 = 14;
    pub const EEXIST: i32 = 17;
    pub const ENOMEM: i32 = 12;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are `repr(C)`, `Copy`, contain only integers and have no implicit padding.
    unsafe impl aya::Pod for super::SampleKey {}
    unsafe impl aya::Pod for super::Control {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<SampleKey>(), 16);
        assert_eq!(core::mem::size_of::<Control>(), 8);
    }

    #[test]
    fn stat_table_is_complete_and_ordered() {
        for (i, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, i);
        }
    }
}
