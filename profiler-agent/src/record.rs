//! The sampling loop: drain the source on an interval, keep process mappings fresh, aggregate,
//! and stop on duration, Ctrl-C/SIGTERM, or the target's exit.
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::signal::unix::{SignalKind, signal};

use crate::aggregate::Aggregator;
use crate::process::{self, ProcessTable};
use crate::source::{RawBatch, SampleSource, SamplerStats, SourceError};
use crate::types::Pid;

#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub target: Option<Pid>,
    pub duration: Option<Duration>,
    pub drain_interval: Duration,
    pub progress: bool,
}

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

/// Samples until a stop condition, returning everything collected. Mappings of every process
/// seen are read on each tick while it lives, so its samples symbolize after it exits.
pub async fn record(
    source: &mut dyn SampleSource,
    mut processes: ProcessTable,
    opts: &RecordOptions,
) -> Result<Recording, SourceError> {
    let start = SystemTime::now();
    let began = Instant::now();
    let mut aggregator = Aggregator::default();
    let bar = progress_bar(opts);
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut ticker = tokio::time::interval(opts.drain_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = opts
        .duration
        .map(|d| tokio::time::Instant::from_std(began + d));
    // Newly seen processes are read at once, so short-lived ones still symbolize.
    let mut announcements = tokio::time::interval(Duration::from_millis(20));
    let stop = loop {
        tokio::select! {
            _ = announcements.tick() => {
                for pid in source.new_processes() {
                    refresh(source, &mut processes, pid);
                }
                source.retry_tables(&processes);
                continue;
            }
            _ = ticker.tick() => {}
            _ = sleep_until(deadline) => break StopReason::Duration,
            _ = tokio::signal::ctrl_c() => break StopReason::Signal,
            _ = recv(&mut sigterm) => break StopReason::Signal,
        }
        let batch = source.drain()?;
        refresh_sampled(source, &mut processes, &batch, opts.target);
        aggregator.add(batch);
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
    refresh_sampled(source, &mut processes, &batch, opts.target);
    aggregator.add(batch);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(Recording {
        aggregator,
        processes,
        stats: source.stats()?,
        start,
        elapsed: began.elapsed(),
        stop,
    })
}

/// Re-reads the mappings of every live process in the batch (and of the target, which may have
/// loaded libraries while it was not sampled). Processes already known to be gone are skipped.
fn refresh_sampled(
    source: &mut dyn SampleSource,
    processes: &mut ProcessTable,
    batch: &RawBatch,
    target: Option<Pid>,
) {
    let pids: BTreeSet<Pid> = batch.samples.iter().map(|s| s.pid).chain(target).collect();
    for pid in pids {
        if processes.get(pid).is_none_or(|p| p.alive) {
            // A process that exited between the sample and now keeps its last mappings.
            refresh(source, processes, pid);
        }
    }
}

/// Re-reads a process's mappings and lets the source load the unwind tables they need.
pub fn refresh(source: &mut dyn SampleSource, processes: &mut ProcessTable, pid: Pid) {
    if processes.refresh(pid).is_ok()
        && let Some(info) = processes.get(pid)
    {
        source.update_process(info);
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
