//! The sampling loop: drain the source on an interval, keep process mappings fresh, aggregate,
//! and stop on duration, Ctrl-C/SIGTERM, or the target's exit.
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::signal::unix::{SignalKind, signal};

use crate::aggregate::Aggregator;
use crate::collect::Tracker;
use crate::config::CommFilter;
use crate::process::{self, ProcessTable};
use crate::source::{SampleSource, SamplerStats, SourceError};
use crate::types::Pid;

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub target: Option<Pid>,
    pub duration: Option<Duration>,
    pub drain_interval: Duration,
    pub progress: bool,
    /// Processes whose samples are kept and unwind tables loaded (`--include-comm` /
    /// `--exclude-comm`).
    pub filter: CommFilter,
    /// How often every live process is checked for an exit (or an exec): exited ones leave the
    /// kernel's unwinder and the announced set, so new processes take their slots.
    pub revalidate_interval: Duration,
}

/// [`RecordOptions::revalidate_interval`] of a run, as continuous mode's export window.
pub const REVALIDATE_INTERVAL: Duration = Duration::from_secs(10);

/// Why sampling stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Signal,
    /// The target process exited, this long after sampling started.
    TargetExited(Duration),
}

pub struct Recording {
    pub aggregator: Aggregator,
    pub processes: ProcessTable,
    pub stats: SamplerStats,
    pub start: SystemTime,
    pub elapsed: Duration,
    pub stop: StopReason,
}

/// Samples until a stop condition, returning everything collected. Processes are read when
/// first seen (and again when sampled outside their mappings, as in continuous mode:
/// [`Tracker`]), so their samples symbolize after they exit.
pub async fn record(
    source: &mut dyn SampleSource,
    processes: ProcessTable,
    opts: &RecordOptions,
) -> Result<Recording, SourceError> {
    let start = SystemTime::now();
    let began = Instant::now();
    let mut aggregator = Aggregator::default();
    let mut tracker = Tracker::new(processes, opts.filter.clone(), false);
    let bar = progress_bar(opts);
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut ticker = tokio::time::interval(opts.drain_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = opts
        .duration
        .map(|d| tokio::time::Instant::from_std(began + d));
    // Newly seen processes are read at once, so short-lived ones still symbolize.
    let mut announcements = tokio::time::interval(Duration::from_millis(20));
    let mut revalidation = tokio::time::interval(opts.revalidate_interval);
    revalidation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = loop {
        tokio::select! {
            _ = announcements.tick() => {
                tracker.announced(source);
                continue;
            }
            _ = revalidation.tick() => {
                // Quiet processes' exits (and programs executed in place) noticed as continuous
                // mode does: without it a long node-wide run keeps every process it ever saw in
                // the kernel's unwinder (1,024 slots) and announced set.
                tracker.revalidate(source);
                forget_exited(source, &mut tracker.processes);
                continue;
            }
            _ = ticker.tick() => {}
            _ = sleep_until(deadline) => break StopReason::Duration,
            _ = tokio::signal::ctrl_c() => break StopReason::Signal,
            _ = recv(&mut sigterm) => break StopReason::Signal,
        }
        let batch = source.drain()?;
        aggregator.add(tracker.sampled(source, batch, true));
        forget_exited(source, &mut tracker.processes);
        if let Some(bar) = &bar {
            bar.set_position(
                began
                    .elapsed()
                    .as_secs()
                    .min(bar.length().unwrap_or(u64::MAX)),
            );
            bar.set_message(format!("{} samples", aggregator.total()));
        }
        if let Some(pid) = opts.target
            && !process::exists(pid)
        {
            break StopReason::TargetExited(began.elapsed());
        }
    };
    // What was counted since the last tick; stopping first makes the kernel's counters final.
    source.stop();
    let batch = source.drain()?;
    // Nothing more is sampled: no table is loaded for it.
    aggregator.add(tracker.sampled(source, batch, false));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(Recording {
        aggregator,
        processes: tracker.processes,
        stats: source.stats()?,
        start,
        elapsed: began.elapsed(),
        stop,
    })
}

/// Exited processes leave the source (their unwind-table slot, the announced set); their
/// mappings stay in the table for symbolizing at the end.
fn forget_exited(source: &mut dyn SampleSource, processes: &mut ProcessTable) {
    let exited = processes.take_exited();
    if !exited.is_empty() {
        source.forget(&exited);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn recv(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn progress_bar(opts: &RecordOptions) -> Option<ProgressBar> {
    if !opts.progress {
        return None;
    }
    let what = opts
        .target
        .map_or_else(|| "all processes".to_string(), |p| format!("pid {p}"));
    let bar = match opts.duration {
        Some(d) => {
            let bar = ProgressBar::with_draw_target(
                Some(d.as_secs().max(1)),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "sampling {what} {{bar:30}} {{elapsed}}/{} {{msg}}",
                    humantime::format_duration(d)
                ))
                .expect("valid template"),
            );
            bar
        }
        None => {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} sampling {what} {{elapsed}} {{msg}} (Ctrl-C to stop)"
                ))
                .expect("valid template"),
            );
            bar
        }
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::process::{Child, Command};

    use super::*;
    use crate::source::{RawBatch, RawSample, StackSide};

    /// A source whose samples come from real processes: ours, and a child it kills after a few
    /// drains. It records what the loop asks of it.
    struct FakeSource {
        child: Child,
        drains: u32,
        updated: HashSet<Pid>,
        forgotten: HashSet<Pid>,
    }

    impl FakeSource {
        fn new() -> Self {
            Self {
                child: Command::new("sleep").arg("30").spawn().unwrap(),
                drains: 0,
                updated: HashSet::new(),
                forgotten: HashSet::new(),
            }
        }
        fn child(&self) -> Pid {
            Pid(self.child.id())
        }
    }

    impl Drop for FakeSource {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl SampleSource for FakeSource {
        fn drain(&mut self) -> Result<RawBatch, SourceError> {
            self.drains += 1;
            let sample = |pid| RawSample {
                pid,
                thread: crate::source::ThreadName::default(),
                user: StackSide::Frames(vec![]),
                kernel: StackSide::Absent,
                count: 1,
            };
            let mut samples = vec![sample(Pid(std::process::id()))];
            if self.drains <= 3 {
                samples.push(sample(self.child()));
            } else if self.drains == 4 {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
            }
            Ok(RawBatch { samples })
        }
        fn forget(&mut self, pids: &[Pid]) {
            self.forgotten.extend(pids);
        }
        fn update_process(&mut self, process: &crate::process::ProcessInfo) {
            self.updated.extend(process.pid);
        }
        fn stop(&mut self) {}
        fn stats(&self) -> Result<SamplerStats, SourceError> {
            Ok(SamplerStats::default())
        }
    }

    fn options(filter: CommFilter) -> RecordOptions {
        RecordOptions {
            target: None,
            duration: Some(Duration::from_millis(600)),
            drain_interval: Duration::from_millis(20),
            progress: false,
            filter,
            revalidate_interval: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn node_wide_local_runs_forget_processes_that_exited() {
        let mut source = FakeSource::new();
        let child = source.child();
        let recording = record(
            &mut source,
            ProcessTable::default(),
            &options(CommFilter::default()),
        )
        .await
        .unwrap();
        assert!(source.updated.contains(&child));
        assert!(source.forgotten.contains(&child), "{:?}", source.forgotten);
        assert!(!source.forgotten.contains(&Pid(std::process::id())));
        // Still there to symbolize its samples at the end.
        assert!(recording.processes.get(child).is_some_and(|p| !p.alive));
    }

    #[tokio::test]
    async fn processes_the_comm_filters_exclude_get_no_unwind_tables() {
        let mut source = FakeSource::new();
        let child = source.child();
        let filter = CommFilter {
            include: None,
            exclude: Some(regex::Regex::new("^sleep$").unwrap()),
        };
        record(&mut source, ProcessTable::default(), &options(filter))
            .await
            .unwrap();
        assert!(source.updated.contains(&Pid(std::process::id())));
        assert!(!source.updated.contains(&child), "{:?}", source.updated);
    }
}
