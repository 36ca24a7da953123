//! The one sampling loop both modes run: sleep until the next drain (reading the processes the
//! kernel announces meanwhile), drain, apply the [`Tracker`]'s policy, notice exits, and stop on
//! a signal, at the end of `--duration` or when the target exits. Local mode writes what it
//! drained to a file at the end; continuous mode hands it to export every window.
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::Tracker;
use crate::collect::source::{RawBatch, SampleSource, SourceError};
use crate::collect::wake::Wakeup;
use crate::process;
use crate::types::Pid;

/// How often every live process is checked for an exit (or a program executed in place) by
/// default: exited ones leave the kernel's unwinder and the announced set, so new processes take
/// their slots. Continuous mode checks once per export window instead.
pub const REVALIDATE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// `--pid`: the session ends when it exits.
    pub target: Option<Pid>,
    pub duration: Option<Duration>,
    pub drain_interval: Duration,
    /// See [`REVALIDATE_INTERVAL`].
    pub revalidate_interval: Duration,
}

/// Why sampling stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    /// A signal, or anything else that set the stop flag (the export destination closed).
    Signal,
    /// The target process exited, this long after sampling started.
    TargetExited(Duration),
}

/// What one drain returned.
pub struct Drained {
    /// The samples counted since the previous drain, of the processes the filters want.
    pub batch: RawBatch,
    /// Set on the last drain: the source is stopped and counts nothing more.
    pub stop: Option<StopReason>,
}

/// A sampling run over one source.
pub struct Session<'s> {
    source: &'s mut dyn SampleSource,
    pub tracker: Tracker,
    opts: SessionOptions,
    /// Set by a signal (see [`watch_signals`]) or by whoever else ends the run.
    stop: Arc<AtomicBool>,
    /// Ends the sleep between drains: a signal, a finished unwind table.
    wake: Arc<Wakeup>,
    began: Instant,
    next_drain: Instant,
    next_revalidation: Instant,
    end: Option<Instant>,
}

impl<'s> Session<'s> {
    /// Starts the clock: the first drain is one interval from now.
    pub fn new(
        source: &'s mut dyn SampleSource,
        tracker: Tracker,
        opts: SessionOptions,
        stop: Arc<AtomicBool>,
        wake: Arc<Wakeup>,
    ) -> Self {
        let began = Instant::now();
        Self {
            next_drain: began + opts.drain_interval,
            next_revalidation: began + opts.revalidate_interval,
            end: opts.duration.map(|d| began + d),
            source,
            tracker,
            opts,
            stop,
            wake,
            began,
        }
    }

    pub fn source(&mut self) -> &mut dyn SampleSource {
        self.source
    }

    pub fn source_ref(&self) -> &dyn SampleSource {
        self.source
    }

    /// Time since the session started.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }

    pub fn into_tracker(self) -> Tracker {
        self.tracker
    }

    /// Sleeps until the next drain is due (or the stop flag is set), reading the processes the
    /// kernel announces meanwhile at once, while they still exist; then drains. When the run
    /// ends the source is stopped first, so the drain returned with `stop` set is the last and
    /// holds everything counted.
    pub fn drain(&mut self) -> Result<Drained, SourceError> {
        let wake_at = self
            .end
            .map_or(self.next_drain, |end| end.min(self.next_drain));
        while !self.stop.load(Ordering::SeqCst) && Instant::now() < wake_at {
            {
                let announcements: Option<BorrowedFd<'_>> = self.source.announcements();
                self.wake.wait(
                    announcements.as_slice(),
                    wake_at.saturating_duration_since(Instant::now()),
                );
            }
            self.tracker.announced(self.source);
        }
        self.next_drain += self.opts.drain_interval;
        let stop = if self.stop.load(Ordering::SeqCst) {
            Some(StopReason::Signal)
        } else if self.opts.target.is_some_and(|pid| !process::exists(pid)) {
            Some(StopReason::TargetExited(self.began.elapsed()))
        } else if self.end.is_some_and(|end| Instant::now() >= end) {
            Some(StopReason::Duration)
        } else {
            None
        };
        if stop.is_some() {
            self.source.stop();
        }
        let batch = self.source.drain()?;
        // Once stopping, no more unwind tables are loaded: nothing will be sampled with them,
        // and loading a large one on a starved CPU would eat into the shutdown deadline.
        let batch = self.tracker.sampled(self.source, batch, stop.is_none());
        if stop.is_none() && Instant::now() >= self.next_revalidation {
            // Quiet processes' exits (and programs executed in place) are noticed here, every
            // interval, rather than by re-reading every process on every drain.
            self.tracker.revalidate(self.source);
            self.next_revalidation = Instant::now() + self.opts.revalidate_interval;
        }
        Ok(Drained { batch, stop })
    }

    /// Exited processes leave the source (their unwind-table slot, the announced set); their
    /// mappings stay in the table, for symbolizing at the end (local mode).
    pub fn release_exited(&mut self) {
        let exited = self.tracker.processes.take_exited();
        if !exited.is_empty() {
            self.source.forget(&exited);
        }
    }
}

/// Catches Ctrl-C and SIGTERM from now on (the handlers are installed before this returns, so a
/// signal that arrives while the agent is still loading is not fatal): the first one sets
/// `stop`, records when in `signalled_at` and wakes the loop. Needs a Tokio runtime.
pub fn watch_signals(
    stop: Arc<AtomicBool>,
    signalled_at: Arc<Mutex<Option<Instant>>>,
    wake: Arc<Wakeup>,
) -> tokio::task::JoinHandle<()> {
    let interrupt = signal(SignalKind::interrupt()).ok();
    let terminate = signal(SignalKind::terminate()).ok();
    tokio::spawn(async move {
        tokio::select! {
            _ = recv(interrupt) => {}
            _ = recv(terminate) => {}
        }
        *signalled_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        stop.store(true, Ordering::SeqCst);
        wake.notify();
    })
}

async fn recv(sig: Option<Signal>) {
    match sig {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
