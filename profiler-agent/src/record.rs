//! Local mode's run of the [`Session`] loop: aggregate every drain, show progress, and return
//! everything collected when it stops (duration, Ctrl-C/SIGTERM, or the target's exit).
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::aggregate::Aggregator;
use crate::collect::source::{SampleSource, SamplerStats, SourceError};
use crate::collect::wake::Wakeup;
use crate::collect::{Drained, Session, SessionOptions, StopReason, Tracker};
use crate::config::CommFilter;
use crate::process::ProcessTable;

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub session: SessionOptions,
    pub progress: bool,
    /// Processes whose samples are kept and unwind tables loaded (`--include-comm` /
    /// `--exclude-comm`).
    pub filter: CommFilter,
}

pub struct Recording {
    pub aggregator: Aggregator,
    pub processes: ProcessTable,
    pub stats: SamplerStats,
    pub start: SystemTime,
    pub elapsed: Duration,
    pub stop: StopReason,
}

/// Samples until a stop condition (`stop` is set by [`crate::collect::session::watch_signals`];
/// `wake` ends the sleep between drains), returning everything collected. Processes are read
/// when first seen (and again when sampled outside their mappings: [`Tracker`]), and exited
/// ones keep their mappings, so their samples symbolize at the end.
pub fn record(
    source: &mut dyn SampleSource,
    processes: ProcessTable,
    opts: &RecordOptions,
    stop: Arc<AtomicBool>,
    wake: Arc<Wakeup>,
) -> Result<Recording, SourceError> {
    let start = SystemTime::now();
    let mut aggregator = Aggregator::default();
    let bar = progress_bar(opts);
    let tracker = Tracker::new(processes, opts.filter.clone(), false);
    let mut session = Session::new(source, tracker, opts.session.clone(), stop, wake);
    let stop = loop {
        let Drained { batch, stop } = session.drain()?;
        aggregator.add(batch);
        session.release_exited();
        if let Some(bar) = &bar {
            bar.set_position(
                session
                    .elapsed()
                    .as_secs()
                    .min(bar.length().unwrap_or(u64::MAX)),
            );
            bar.set_message(format!("{} samples", aggregator.total()));
        }
        if let Some(stop) = stop {
            break stop;
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let stats = session.source_ref().stats()?;
    let elapsed = session.elapsed();
    Ok(Recording {
        aggregator,
        processes: session.into_tracker().processes,
        stats,
        start,
        elapsed,
        stop,
    })
}

fn progress_bar(opts: &RecordOptions) -> Option<ProgressBar> {
    if !opts.progress {
        return None;
    }
    let what = opts
        .session
        .target
        .map_or_else(|| "all processes".to_string(), |p| format!("pid {p}"));
    let bar = match opts.session.duration {
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
    use crate::collect::source::{RawBatch, RawSample, StackSide};
    use crate::types::Pid;

    /// A source whose samples come from real processes: ours, and a child it kills after a few
    /// drains. It records what the loop asks of it.
    struct FakeSource {
        child: Child,
        drains: u32,
        updated: HashSet<Pid>,
        forgotten: HashSet<Pid>,
        stopped: bool,
        drained_after_stop: u32,
    }

    impl FakeSource {
        fn new() -> Self {
            Self {
                child: Command::new("sleep").arg("30").spawn().unwrap(),
                drains: 0,
                updated: HashSet::new(),
                forgotten: HashSet::new(),
                stopped: false,
                drained_after_stop: 0,
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
            self.drained_after_stop += u32::from(self.stopped);
            let sample = |pid| RawSample {
                pid,
                thread: crate::collect::source::ThreadName::default(),
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
        fn stop(&mut self) {
            self.stopped = true;
        }
        fn stats(&self) -> Result<SamplerStats, SourceError> {
            Ok(SamplerStats::default())
        }
    }

    fn options(filter: CommFilter) -> RecordOptions {
        RecordOptions {
            session: SessionOptions {
                target: None,
                duration: Some(Duration::from_millis(600)),
                drain_interval: Duration::from_millis(20),
                revalidate_interval: Duration::from_millis(50),
            },
            progress: false,
            filter,
        }
    }

    fn run(source: &mut FakeSource, filter: CommFilter) -> Recording {
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Wakeup::new().unwrap());
        record(
            source,
            ProcessTable::default(),
            &options(filter),
            stop,
            wake,
        )
        .unwrap()
    }

    #[test]
    fn node_wide_local_runs_forget_processes_that_exited() {
        let mut source = FakeSource::new();
        let child = source.child();
        let recording = run(&mut source, CommFilter::default());
        assert_eq!(recording.stop, StopReason::Duration);
        assert!(source.updated.contains(&child));
        assert!(source.forgotten.contains(&child), "{:?}", source.forgotten);
        assert!(!source.forgotten.contains(&Pid(std::process::id())));
        // Still there to symbolize its samples at the end.
        assert!(recording.processes.get(child).is_some_and(|p| !p.alive));
    }

    #[test]
    fn processes_the_comm_filters_exclude_get_no_unwind_tables() {
        let mut source = FakeSource::new();
        let child = source.child();
        let filter = CommFilter {
            include: None,
            exclude: Some(regex::Regex::new("^sleep$").unwrap()),
        };
        let mut recording = run(&mut source, filter);
        assert!(source.updated.contains(&Pid(std::process::id())));
        assert!(!source.updated.contains(&child), "{:?}", source.updated);
        // Nor are their samples kept.
        let pids: HashSet<Pid> = recording
            .aggregator
            .take()
            .into_iter()
            .map(|(key, _)| key.pid)
            .collect();
        assert_eq!(pids, [Pid(std::process::id())].into_iter().collect());
    }

    #[test]
    fn the_stop_flag_ends_the_run_with_a_last_drain_after_the_source_stopped() {
        let mut source = FakeSource::new();
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(Wakeup::new().unwrap());
        let mut opts = options(CommFilter::default());
        opts.session.duration = None;
        // Long enough that only the flag can end the sleep before the test's own timeout.
        opts.session.drain_interval = Duration::from_secs(600);
        let signal = std::thread::spawn({
            let (stop, wake) = (Arc::clone(&stop), Arc::clone(&wake));
            move || {
                std::thread::sleep(Duration::from_millis(100));
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                wake.notify();
            }
        });
        let recording = record(&mut source, ProcessTable::default(), &opts, stop, wake).unwrap();
        signal.join().unwrap();
        assert_eq!(recording.stop, StopReason::Signal);
        assert_eq!(source.drains, 1);
        assert_eq!(source.drained_after_stop, 1);
        assert!(recording.aggregator.total() > 0);
    }
}
