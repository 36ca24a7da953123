//! Collecting samples: the one session loop local and continuous mode share ([`session`]), and
//! the [`Tracker`]'s policy for what it samples: when a process's mappings are read, which
//! processes get unwind tables, whose samples are kept, and when exits are noticed.
pub mod bpf;
pub mod session;
pub mod source;
pub mod wake;

pub use session::{Drained, Session, SessionOptions, StopReason};

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::collect::source::{RawBatch, SampleSource, StackSide};
use crate::config::CommFilter;
use crate::process::ProcessTable;
use crate::resource::{self, ProcessResource};
use crate::types::Pid;

/// How soon a process whose samples fall outside its known mappings has them read again. The
/// first such sample re-reads them at once (a library was loaded, the program executed another);
/// this bounds the re-reading for addresses that are in no mapping at all (a frame-pointer walk
/// through code without frame pointers yields some).
const REREAD_UNMAPPED: Duration = Duration::from_secs(10);

/// The processes a run has seen, and the policy that keeps them fresh.
pub struct Tracker {
    pub processes: ProcessTable,
    filter: CommFilter,
    /// Each wanted process's resource attributes, read while it lives (continuous mode: they
    /// become OTLP resources), when `read_resources`. At most one entry per process in
    /// `processes`, which the caller bounds by forgetting exited ones.
    resources: HashMap<Pid, ProcessResource>,
    read_resources: bool,
    /// When each process was last read again for samples outside its mappings: the first such
    /// batch re-reads at once, later ones wait [`REREAD_UNMAPPED`]. One entry per process in
    /// `processes`, dropped with it.
    unmapped_reread: HashMap<Pid, Instant>,
}

impl Tracker {
    pub fn new(processes: ProcessTable, filter: CommFilter, read_resources: bool) -> Self {
        Self {
            processes,
            filter,
            resources: HashMap::new(),
            read_resources,
            unmapped_reread: HashMap::new(),
        }
    }

    pub fn resources(&self) -> &HashMap<Pid, ProcessResource> {
        &self.resources
    }

    /// Processes the kernel announced (sampled for the first time): their mappings are read at
    /// once, while they still exist, and the wanted ones get unwind tables. Tables finished in
    /// the background meanwhile are handed to the processes that waited for them.
    pub fn announced(&mut self, source: &mut dyn SampleSource) {
        for pid in source.new_processes() {
            if self.processes.refresh(pid).is_ok() {
                self.keep(source, pid, true);
            }
        }
        source.retry_tables(&self.processes);
    }

    /// What a drain returned, with the samples of processes the filters exclude dropped. The
    /// batch's processes are read if they are new, or sampled outside the mappings known (at
    /// most every [`REREAD_UNMAPPED`]); with `load_tables` false (stopping: nothing more will be
    /// sampled with them) no unwind table is loaded.
    pub fn sampled(
        &mut self,
        source: &mut dyn SampleSource,
        mut batch: RawBatch,
        load_tables: bool,
    ) -> RawBatch {
        let mut pids: Vec<Pid> = batch.samples.iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let unmapped = outside_mappings(&batch, &self.processes);
        let mut unwanted = HashSet::new();
        for pid in pids {
            let reread = match self.processes.get(pid) {
                None => true,
                Some(p) => {
                    let due = p.alive
                        && unmapped.contains(&pid)
                        && self
                            .unmapped_reread
                            .get(&pid)
                            .is_none_or(|at| at.elapsed() >= REREAD_UNMAPPED);
                    if due {
                        self.unmapped_reread.insert(pid, Instant::now());
                    }
                    due
                }
            };
            let fresh = reread && self.processes.refresh(pid).is_ok();
            if !self.keep(source, pid, fresh && load_tables) {
                unwanted.insert(pid);
            }
        }
        if !unwanted.is_empty() {
            batch.samples.retain(|s| !unwanted.contains(&s.pid));
        }
        batch
    }

    /// Checks every live process for an exit or a program executed in place (whose mappings
    /// are read again and tables loaded). Exited processes are only marked: see
    /// [`ProcessTable::take_exited`] and [`ProcessTable::forget_exited`].
    pub fn revalidate(&mut self, source: &mut dyn SampleSource) {
        for pid in self.processes.revalidate() {
            if let Some(info) = self.processes.get(pid)
                && self.filter.wants(&info.comm)
            {
                source.update_process(info);
            }
        }
    }

    /// Drops what is kept of processes the table no longer holds (after
    /// [`ProcessTable::forget_exited`]).
    pub fn retain_known(&mut self) {
        let processes = &self.processes;
        self.resources
            .retain(|pid, _| processes.get(*pid).is_some());
        self.unmapped_reread
            .retain(|pid, _| processes.get(*pid).is_some());
    }

    /// Whether the filters want `pid`; if so, its tables are loaded when `update` (its mappings
    /// were just read) and its resource is read if not yet known.
    fn keep(&mut self, source: &mut dyn SampleSource, pid: Pid, update: bool) -> bool {
        let info = self.processes.get(pid);
        // A process never read (it exited first) has no name: it is kept if the filters let an
        // empty name through, and its samples stay unnamed.
        let comm = info.map_or("", |p| p.comm.as_str());
        if !self.filter.wants(comm) {
            return false;
        }
        if update && let Some(info) = info {
            source.update_process(info);
        }
        if self.read_resources {
            self.resources
                .entry(pid)
                .or_insert_with(|| resource::read_process_resource(pid.0, comm));
        }
        true
    }
}

/// Processes with a user frame in none of their known mappings.
fn outside_mappings(batch: &RawBatch, processes: &ProcessTable) -> HashSet<Pid> {
    let mut found = HashSet::new();
    for sample in &batch.samples {
        if found.contains(&sample.pid) {
            continue;
        }
        let (Some(info), StackSide::Frames(frames)) = (processes.get(sample.pid), &sample.user)
        else {
            continue;
        };
        if frames.iter().any(|addr| info.mapping(*addr).is_none()) {
            found.insert(sample.pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::source::RawSample;
    use crate::types::VirtAddr;

    #[test]
    fn only_processes_sampled_outside_their_mappings_are_read_again() {
        let me = Pid(std::process::id());
        let mut processes = ProcessTable::default();
        processes.refresh(me).unwrap();
        let here = VirtAddr(
            only_processes_sampled_outside_their_mappings_are_read_again as *const () as usize
                as u64,
        );
        let known = RawBatch {
            samples: vec![sample(me, vec![here])],
        };
        assert!(outside_mappings(&known, &processes).is_empty());
        let unmapped = RawBatch {
            samples: vec![
                sample(me, vec![here]),
                sample(me, vec![here, VirtAddr(0x10)]),
                // Not in the table yet: read as a new process, not through this rule.
                sample(Pid(u32::MAX - 1), vec![VirtAddr(0x10)]),
            ],
        };
        assert_eq!(
            outside_mappings(&unmapped, &processes),
            [me].into_iter().collect()
        );
    }

    /// Records which processes the tracker hands to the unwinder.
    #[derive(Default)]
    struct Updates(Vec<Pid>);

    impl SampleSource for Updates {
        fn drain(&mut self) -> Result<RawBatch, crate::collect::source::SourceError> {
            Ok(RawBatch::default())
        }
        fn update_process(&mut self, process: &crate::process::ProcessInfo) {
            self.0.extend(process.pid);
        }
        fn stop(&mut self) {}
        fn stats(
            &self,
        ) -> Result<crate::collect::source::SamplerStats, crate::collect::source::SourceError>
        {
            Ok(Default::default())
        }
    }

    fn sample(pid: Pid, frames: Vec<VirtAddr>) -> RawSample {
        RawSample {
            pid,
            thread: crate::collect::source::ThreadName::default(),
            user: StackSide::Frames(frames),
            kernel: StackSide::Absent,
            count: 1,
        }
    }

    #[test]
    fn the_first_unmapped_batch_rereads_at_once_and_later_ones_wait() {
        let me = Pid(std::process::id());
        let mut tracker = Tracker::new(ProcessTable::default(), CommFilter::default(), true);
        let mut source = Updates::default();
        let batch = || RawBatch {
            samples: vec![sample(me, vec![VirtAddr(0x10)])],
        };
        // New: read, handed to the unwinder, its resource read.
        assert_eq!(tracker.sampled(&mut source, batch(), true).total(), 1);
        assert_eq!(source.0, [me]);
        assert!(tracker.resources().contains_key(&me));
        let first_read = tracker.processes.get(me).unwrap().read_at;
        // Known, sampled outside its mappings for the first time: read again at once.
        tracker.sampled(&mut source, batch(), true);
        assert_eq!(source.0, [me, me]);
        let second_read = tracker.processes.get(me).unwrap().read_at;
        assert_ne!(first_read, second_read);
        // Again within REREAD_UNMAPPED: not read, not updated.
        tracker.sampled(&mut source, batch(), true);
        assert_eq!(source.0, [me, me]);
        assert_eq!(tracker.processes.get(me).unwrap().read_at, second_read);
        // Stopping: read if due, but no table loaded.
        tracker.unmapped_reread.clear();
        tracker.sampled(&mut source, batch(), false);
        assert_eq!(source.0, [me, me]);
    }

    #[test]
    fn filters_drop_samples_and_a_process_never_read_counts_as_unnamed() {
        let me = Pid(std::process::id());
        let gone = Pid(u32::MAX - 1);
        let batch = || RawBatch {
            samples: vec![sample(me, vec![]), sample(gone, vec![])],
        };
        let only = |re: &str| CommFilter {
            include: Some(regex::Regex::new(re).unwrap()),
            exclude: None,
        };
        let mut source = Updates::default();
        let mut named = Tracker::new(ProcessTable::default(), only("^.+$"), false);
        let kept = named.sampled(&mut source, batch(), true);
        assert_eq!(kept.samples.iter().map(|s| s.pid).collect::<Vec<_>>(), [me]);
        assert!(
            named.resources().is_empty(),
            "local mode reads no resources"
        );
        let mut none = Tracker::new(ProcessTable::default(), only("^$"), false);
        let kept = none.sampled(&mut source, batch(), true);
        assert_eq!(
            kept.samples.iter().map(|s| s.pid).collect::<Vec<_>>(),
            [gone]
        );
        let mut all = Tracker::new(ProcessTable::default(), CommFilter::default(), true);
        assert_eq!(all.sampled(&mut source, batch(), true).total(), 2);
        assert!(
            all.resources().contains_key(&gone),
            "the fallback is read too"
        );
    }
}
