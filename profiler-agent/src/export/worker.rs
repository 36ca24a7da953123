//! The export stage of continuous mode: windows of aggregated samples go to a thread of their
//! own that symbolizes them, encodes OTLP requests and queues them for the sender.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

use crate::AgentError;
use crate::aggregate::Aggregator;
use crate::export::attributes::{fallback_resource, process_attributes};
use crate::export::otlp;
use crate::export::queue::ExportQueue;
use crate::metrics::{DropReason, Metrics};
use crate::process::{ObjectFile, ProcessTable};
use crate::profile::{self, ProcessMeta, ProfileMeta};
use crate::resource::ProcessResource;
use crate::symbolize::Symbolizer;
use crate::types::Pid;

/// State carried between export windows.
pub struct Window {
    pub aggregator: Aggregator,
    pub start: SystemTime,
    pub began: Instant,
}

impl Default for Window {
    fn default() -> Self {
        Self::new()
    }
}

impl Window {
    pub fn new() -> Self {
        Self {
            aggregator: Aggregator::default(),
            start: SystemTime::now(),
            began: Instant::now(),
        }
    }
}

/// One window for the export thread, with what symbolizing it needs.
pub struct Job {
    window: Window,
    /// The window's processes (sharing the open files of the sampling thread's table).
    processes: ProcessTable,
    resources: HashMap<Pid, ProcessResource>,
    /// Files no process maps any more: the symbolizer lets go of them after this window.
    pub forget: Vec<Arc<ObjectFile>>,
}

/// What turns a window into queued requests.
pub struct Encoder {
    pub metrics: Arc<Metrics>,
    pub queue: Arc<ExportQueue>,
    /// Attributes every resource carries (see [`crate::export::attributes`]).
    pub common: Vec<KeyValue>,
    pub frequency: u64,
    pub node_wide: bool,
    pub max_message_bytes: usize,
}

impl Encoder {
    /// Symbolizes one window and queues its requests; returns how many.
    pub fn export(
        &self,
        mut window: Window,
        processes: &ProcessTable,
        resources: &HashMap<Pid, ProcessResource>,
        symbolizer: &mut Symbolizer,
    ) -> u64 {
        self.metrics
            .drop_samples(DropReason::AggregationBound, window.aggregator.dropped());
        let entries = window.aggregator.take();
        if entries.is_empty() {
            return 0;
        }
        let meta = ProfileMeta {
            start: window.start,
            duration: window.began.elapsed(),
            frequency: self.frequency,
            title: String::new(),
            node_wide: self.node_wide,
        };
        let profile = profile::build(entries, processes, symbolizer, &meta);
        // Parsed symbol tables and DWARF are the bulk of the agent's memory; the per-address
        // results stay cached for the next window.
        symbolizer.release_parsed();
        self.metrics.observe_symbolizer(&symbolizer.stats);
        let resource_of = |p: &ProcessMeta| match resources.get(&p.pid) {
            Some(r) => process_attributes(r, &self.common),
            None => process_attributes(&fallback_resource(p), &self.common),
        };
        let (requests, too_large) =
            otlp::build_requests(&profile, &resource_of, self.max_message_bytes);
        self.metrics
            .drop_samples(DropReason::StackTooLarge, too_large);
        let count = requests.len() as u64;
        for request in requests {
            let samples = request
                .resource_profiles
                .iter()
                .flat_map(|r| &r.scope_profiles)
                .flat_map(|s| &s.profiles)
                .flat_map(|p| &p.samples)
                .map(|s| s.values.iter().sum::<i64>() as u64)
                .sum();
            // Encoded now, once: the queue holds bytes, and the tree of messages goes.
            self.queue.push(request.encode_to_vec().into(), samples);
        }
        count
    }
}

/// Symbolizes and encodes windows off the sampling thread, so a slow export (a cold symbolizer,
/// a large binary, a starved CPU) never delays a drain, nor the reaction to SIGTERM. At most one
/// window is in progress and one waits (the channel's bound): the sampling thread only hands
/// over a regular window when the thread is idle, and keeps aggregating otherwise.
pub struct ExportThread {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Requests queued for sending, one message per finished job.
    done: std::sync::mpsc::Receiver<u64>,
    /// Jobs handed over and not finished.
    outstanding: usize,
    /// Samples in those jobs (decremented by the thread as it queues them).
    samples: Arc<std::sync::atomic::AtomicU64>,
}

impl ExportThread {
    pub fn start(exporter: Encoder) -> Result<Self, AgentError> {
        let (jobs, inbox) = std::sync::mpsc::sync_channel::<Job>(2);
        let (report, done) = std::sync::mpsc::channel();
        let samples = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pending = Arc::clone(&samples);
        std::thread::Builder::new()
            .name("kalypso-export".into())
            .spawn(move || {
                // blazesym's symbolizer stays on the thread that made it.
                let mut symbolizer = Symbolizer::new();
                for job in inbox {
                    let total = job.window.aggregator.total();
                    let requests = exporter.export(
                        job.window,
                        &job.processes,
                        &job.resources,
                        &mut symbolizer,
                    );
                    symbolizer.forget(&job.forget);
                    pending.fetch_sub(total, Ordering::SeqCst);
                    if report.send(requests).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| AgentError::Config(format!("cannot start the export thread: {e}")))?;
        Ok(Self {
            jobs,
            done,
            outstanding: 0,
            samples,
        })
    }

    /// Requests queued by jobs finished since the last call; an error once the thread has
    /// died (a panic while symbolizing), which ends the agent rather than let windows pile up.
    pub fn finished(&mut self) -> Result<u64, AgentError> {
        let mut requests = 0;
        loop {
            match self.done.try_recv() {
                Ok(n) => {
                    self.outstanding -= 1;
                    requests += n;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(requests),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(AgentError::Config(
                        "the export thread stopped unexpectedly".into(),
                    ));
                }
            }
        }
    }

    pub fn idle(&self) -> bool {
        self.outstanding == 0
    }

    /// Hands a job over; `Err(samples)` if it could not be (the thread has died, or two jobs
    /// are waiting already, which the callers rule out).
    pub fn hand_over(&mut self, job: Job) -> Result<(), u64> {
        let total = job.window.aggregator.total();
        self.samples.fetch_add(total, Ordering::SeqCst);
        if self.jobs.try_send(job).is_err() {
            self.samples.fetch_sub(total, Ordering::SeqCst);
            return Err(total);
        }
        self.outstanding += 1;
        Ok(())
    }

    /// Waits for every job until `deadline`; returns the requests they queued, and the samples
    /// of jobs not finished by then.
    pub fn finish_by(&mut self, deadline: Instant) -> (u64, u64) {
        let mut requests = self.finished().unwrap_or(0);
        while self.outstanding > 0 {
            match self
                .done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(n) => {
                    self.outstanding -= 1;
                    requests += n;
                }
                Err(_) => break,
            }
        }
        let unfinished = if self.outstanding > 0 {
            self.samples.load(Ordering::SeqCst)
        } else {
            0
        };
        (requests, unfinished)
    }
}

impl Job {
    pub fn new(
        window: Window,
        processes: &ProcessTable,
        resources: &HashMap<Pid, ProcessResource>,
    ) -> Self {
        Self {
            processes: processes.subset(window.aggregator.pids()),
            resources: window
                .aggregator
                .pids()
                .filter_map(|pid| Some((pid, resources.get(&pid)?.clone())))
                .collect(),
            window,
            forget: Vec::new(),
        }
    }
}
