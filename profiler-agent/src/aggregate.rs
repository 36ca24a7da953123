//! Sums drained samples by (process, thread name, user stack, kernel stack). Stack ids are only meaningful
//! within one drain, so the aggregator keys on the addresses themselves.
use std::collections::HashMap;

use crate::collect::source::{RawBatch, StackSide, ThreadName};
use crate::types::Pid;

/// Default bound on distinct stacks held between flushes. Past it, new stacks are dropped and
/// counted (existing ones still count up), so memory stays bounded under any workload.
pub const DEFAULT_MAX_STACKS: usize = 200_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub pid: Pid,
    pub thread: ThreadName,
    pub user: StackSide,
    pub kernel: StackSide,
}

#[derive(Debug)]
pub struct Aggregator {
    counts: HashMap<StackKey, u64>,
    max_stacks: usize,
    total: u64,
    dropped: u64,
}

impl Default for Aggregator {
    fn default() -> Self {
        Self::with_max_stacks(DEFAULT_MAX_STACKS)
    }
}

impl Aggregator {
    pub fn with_max_stacks(max_stacks: usize) -> Self {
        Self {
            counts: HashMap::new(),
            max_stacks,
            total: 0,
            dropped: 0,
        }
    }

    pub fn add(&mut self, batch: RawBatch) {
        for sample in batch.samples {
            let key = StackKey {
                pid: sample.pid,
                thread: sample.thread,
                user: sample.user,
                kernel: sample.kernel,
            };
            let len = self.counts.len();
            match self.counts.get_mut(&key) {
                Some(count) => *count += sample.count,
                None if len < self.max_stacks => {
                    self.counts.insert(key, sample.count);
                }
                None => {
                    self.dropped += sample.count;
                    continue;
                }
            }
            self.total += sample.count;
        }
    }

    /// Samples held (not counting dropped ones).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Samples dropped because the stack bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn distinct_stacks(&self) -> usize {
        self.counts.len()
    }

    pub fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        let mut pids: Vec<Pid> = self.counts.keys().map(|k| k.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter()
    }

    /// Takes everything out, leaving the aggregator empty (the dropped count stays cumulative).
    /// Entries come sorted, so output built from them is deterministic.
    pub fn take(&mut self) -> Vec<(StackKey, u64)> {
        self.total = 0;
        let mut entries: Vec<_> = self.counts.drain().collect();
        entries.sort_unstable();
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::source::RawSample;
    use crate::types::{StackLoss, VirtAddr};

    fn sample(pid: u32, user: &[u64], count: u64) -> RawSample {
        RawSample {
            pid: Pid(pid),
            thread: ThreadName::default(),
            user: StackSide::Frames(user.iter().map(|a| VirtAddr(*a)).collect()),
            kernel: StackSide::Absent,
            count,
        }
    }

    #[test]
    fn sums_identical_stacks_across_drains() {
        let mut agg = Aggregator::default();
        agg.add(RawBatch {
            samples: vec![sample(1, &[1, 2], 3), sample(1, &[1, 3], 1)],
        });
        agg.add(RawBatch {
            samples: vec![sample(1, &[1, 2], 2)],
        });
        let out = agg.take();
        assert_eq!(out.len(), 2);
        assert_eq!(
            out.iter()
                .find(|(k, _)| k.user == StackSide::Frames(vec![VirtAddr(1), VirtAddr(2)]))
                .unwrap()
                .1,
            5
        );
        assert_eq!(agg.total(), 0);
        assert!(agg.take().is_empty());
    }

    #[test]
    fn keeps_processes_apart() {
        let mut agg = Aggregator::default();
        agg.add(RawBatch {
            samples: vec![sample(1, &[1], 1), sample(2, &[1], 1)],
        });
        assert_eq!(agg.distinct_stacks(), 2);
        assert_eq!(agg.pids().collect::<Vec<_>>(), vec![Pid(1), Pid(2)]);
    }

    #[test]
    fn lost_stacks_still_count() {
        let mut agg = Aggregator::default();
        let lost = RawSample {
            pid: Pid(1),
            thread: ThreadName::default(),
            user: StackSide::Lost(StackLoss::Collision),
            kernel: StackSide::Absent,
            count: 4,
        };
        agg.add(RawBatch {
            samples: vec![lost],
        });
        assert_eq!(agg.total(), 4);
    }

    #[test]
    fn drops_and_counts_new_stacks_past_the_bound() {
        let mut agg = Aggregator::with_max_stacks(2);
        agg.add(RawBatch {
            samples: vec![
                sample(1, &[1], 1),
                sample(1, &[2], 1),
                sample(1, &[3], 5),
                sample(1, &[1], 2),
            ],
        });
        assert_eq!(agg.distinct_stacks(), 2);
        assert_eq!(agg.total(), 4);
        assert_eq!(agg.dropped(), 5);
    }
}
