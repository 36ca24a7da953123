//! The sample-source seam between the sampler and the sampling loop: [`crate::collect::bpf::BpfSampler`]
//! is the one real source; `record`'s tests drive the loop with a fake whose samples come from
//! real processes.
use profiler_common::Stat;

use std::sync::Arc;

use crate::collect::bpf::BpfError;
use crate::process::{ObjectFile, ProcessInfo, ProcessTable};
use crate::types::{Pid, StackLoss, VirtAddr};
use crate::unwind::loader::LoaderStats;

/// One side (user or kernel) of a sampled stack, leaf first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackSide {
    Frames(Vec<VirtAddr>),
    /// No stack on this side, and none expected (a user-mode sample has no kernel stack).
    Absent,
    /// The stack was lost; the sample still counts.
    Lost(StackLoss),
}

/// A thread's name as the kernel keeps it (`comm`: at most 15 bytes, NUL-padded; empty when
/// unknown). Compared as bytes, so aggregating by it costs no allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadName(pub [u8; profiler_common::THREAD_NAME_LEN]);

impl ThreadName {
    pub fn new(name: &str) -> Self {
        let mut bytes = [0; profiler_common::THREAD_NAME_LEN];
        // The kernel keeps 15 bytes and a NUL.
        let len = name.len().min(bytes.len() - 1);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self(bytes)
    }

    /// The name up to its NUL, invalid UTF-8 replaced; `None` when empty.
    pub fn text(&self) -> Option<String> {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        (len > 0).then(|| String::from_utf8_lossy(&self.0[..len]).into_owned())
    }
}

/// Samples of one process's threads of one name with one (user, kernel) stack pair, summed
/// over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawSample {
    pub pid: Pid,
    pub thread: ThreadName,
    pub user: StackSide,
    pub kernel: StackSide,
    pub count: u64,
}

/// Everything one drain returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawBatch {
    pub samples: Vec<RawSample>,
}

impl RawBatch {
    pub fn total(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

/// Cumulative kernel-side counters, indexed by [`Stat`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SamplerStats {
    pub counts: [u64; Stat::COUNT as usize],
}

impl SamplerStats {
    pub fn get(&self, stat: Stat) -> u64 {
        self.counts[stat as usize]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
}

/// Where samples come from.
pub trait SampleSource {
    /// Everything sampled since the previous drain. Never loses a sample that was counted.
    fn drain(&mut self) -> Result<RawBatch, SourceError>;
    /// Processes sampled for the first time since the last call, announced by the kernel as soon
    /// as they are seen, so their mappings can be read before they exit.
    fn new_processes(&mut self) -> Vec<Pid> {
        Vec::new()
    }
    /// Readable when [`SampleSource::new_processes`] has something: the loop sleeps on it. A
    /// source without one is only read at each drain.
    fn announcements(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// Processes known to have exited: announce them again if their pid is reused.
    fn forget(&mut self, _pids: &[Pid]) {}
    /// A process's mappings were (re)read: the unwinder loads the tables it needs.
    fn update_process(&mut self, _process: &ProcessInfo) {}
    /// Unwind tables finished building in the background: the processes that waited for them
    /// are updated (looked up in `processes`).
    fn retry_tables(&mut self, _processes: &ProcessTable) {}
    /// Files no process maps any more: their unwind tables can go.
    fn forget_objects(&mut self, _objects: &[Arc<ObjectFile>]) {}
    /// Unwind-table counters, when tables are in use.
    fn table_stats(&self) -> Option<LoaderStats> {
        None
    }
    /// Stops sampling; a following drain returns the last samples, and nothing is counted after.
    fn stop(&mut self);
    /// Cumulative counters since start.
    fn stats(&self) -> Result<SamplerStats, SourceError>;
}
