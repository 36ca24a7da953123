//! Continuous mode (the DaemonSet): sample every process (or one), export every interval, never
//! block sampling on export, and flush what is pending on SIGTERM.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use tokio::sync::watch;

use crate::AgentError;
use crate::aggregate::Aggregator;
use crate::bpf::BpfSampler;
use crate::config::{Config, ExporterKind};
use crate::export::otlp::{self, int_kv, string_kv};
use crate::export::queue::ExportQueue;
use crate::export::sender::{self, OtlpSettings, OtlpSink, Sink};
use crate::metrics::{self, DropReason, Metrics};
use crate::process::{self, ObjectFile, ProcessTable};
use crate::profile::{self, ProcessMeta, ProfileMeta};
use crate::resource::{self, ProcessResource};
use crate::source::{RawBatch, SampleSource, SamplerStats, StackSide};
use crate::symbolize::Symbolizer;
use crate::telemetry;
use crate::types::Pid;
use crate::unwind::loader::LoaderStats;
use crate::wake::Wakeup;

/// How soon a process whose samples fall outside its known mappings has them read again. The
/// first such sample re-reads them at once (a library was loaded, the program executed another);
/// this bounds the re-reading for addresses that are in no mapping at all (a frame-pointer walk
/// through code without frame pointers yields some).
const REREAD_UNMAPPED: Duration = Duration::from_secs(10);

/// Attributes every resource carries: host and user-supplied ones.
fn common_attributes(cfg: &Config) -> Result<Vec<KeyValue>, AgentError> {
    let host = cfg.host_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "unknown".into(), |h| h.trim().to_string())
    });
    let mut attrs = vec![
        string_kv("host.name", host),
        string_kv("host.arch", resource::host_arch()),
    ];
    if let Some(text) = &cfg.resource_attributes {
        let extra = resource::parse_otel_resource_attributes(text)
            .map_err(|e| AgentError::Config(format!("OTEL_RESOURCE_ATTRIBUTES: {e}")))?;
        for (k, v) in extra {
            attrs.retain(|a| a.key != k);
            attrs.push(string_kv(&k, v));
        }
    }
    Ok(attrs)
}

fn process_attributes(r: &ProcessResource, common: &[KeyValue]) -> Vec<KeyValue> {
    // No service.name for an undeclared container process: the collector names it from the pod
    // (see `resource::service_name`).
    let mut attrs: Vec<KeyValue> = r
        .service_name
        .iter()
        .map(|name| string_kv("service.name", name.clone()))
        .collect();
    attrs.push(int_kv("process.pid", i64::from(r.pid)));
    if let Some(name) = &r.executable_name {
        attrs.push(string_kv("process.executable.name", name.clone()));
    }
    if let Some(path) = &r.executable_path {
        attrs.push(string_kv("process.executable.path", path.clone()));
    }
    if let Some(id) = &r.container_id {
        attrs.push(string_kv("container.id", id.clone()));
    }
    if let Some(uid) = &r.pod_uid {
        attrs.push(string_kv("k8s.pod.uid", uid.clone()));
    }
    // User-supplied attributes must not override what identifies the process.
    attrs.extend(
        common
            .iter()
            .filter(|c| !attrs.iter().any(|a| a.key == c.key))
            .cloned()
            .collect::<Vec<_>>(),
    );
    attrs
}

fn make_sink(cfg: &Config, kind: ExporterKind) -> Result<Sink, AgentError> {
    Ok(match kind {
        ExporterKind::Otlp => {
            let headers = cfg.otlp_headers().map_err(AgentError::Config)?;
            Sink::Otlp(Box::new(
                OtlpSink::new(&OtlpSettings {
                    endpoint: cfg.otlp_endpoint(),
                    headers,
                    ca_file: cfg.otlp_ca_file.clone(),
                    max_message_bytes: cfg.otlp_max_message_bytes,
                })
                .map_err(|e| AgentError::Config(e.to_string()))?,
            ))
        }
        ExporterKind::Stdout => Sink::Stdout,
        ExporterKind::None => Sink::None,
    })
}

/// Totals for the exit summary.
#[derive(Debug, Default)]
pub struct DaemonSummary {
    /// Samples collected (after filters).
    pub samples: u64,
    /// Samples in requests the collector accepted.
    pub sent: u64,
    /// Samples dropped anywhere after collection (queue full, rejected, unsent at shutdown).
    pub dropped: u64,
    pub exports: u64,
    pub requests: u64,
    pub target_exited: bool,
    /// The kernel's counters at the end.
    pub stats: SamplerStats,
    /// Unwind-table counters at the end, when tables were in use.
    pub tables: Option<LoaderStats>,
}

pub async fn run(cfg: &Config, kind: ExporterKind) -> Result<DaemonSummary, AgentError> {
    // SIGTERM and Ctrl-C are caught from the very start: a pod stopped while the agent is still
    // loading must exit 0, not die of the signal. Their arrival starts the one shutdown deadline.
    let stop = Arc::new(AtomicBool::new(false));
    let signalled_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let wake = Arc::new(
        Wakeup::new().map_err(|e| AgentError::Config(format!("cannot create an eventfd: {e}")))?,
    );
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let signals = tokio::spawn(wait_for_signal(
        term,
        Arc::clone(&stop),
        Arc::clone(&signalled_at),
        Arc::clone(&wake),
    ));
    if let Some(pid) = cfg.pid
        && !process::exists(pid)
    {
        return Err(AgentError::NoSuchProcess(pid));
    }
    let sink = make_sink(cfg, kind)?;
    let common = common_attributes(cfg)?;
    let metrics = Arc::new(Metrics::new());
    let bound = metrics::serve(cfg.metrics_addr, Arc::clone(&metrics))
        .await
        .map_err(|e| AgentError::Config(e.to_string()))?;
    tracing::info!("serving /metrics and /healthz on {bound}");
    // Logs, once, where the node's debug files are looked for (or why nowhere).
    crate::debuginfo::node_debug_dir();
    let mut options = cfg.sampler_options();
    options.tables.wake = Some(Arc::clone(&wake));
    let sampler = BpfSampler::start(options)?;

    let queue = Arc::new(ExportQueue::new(cfg.export_queue_bytes));
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    let sink_closed = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let sender = sender::run(Arc::clone(&queue), sink, Arc::clone(&metrics), shutdown_rx);
        let (stop, wake, closed) = (
            Arc::clone(&stop),
            Arc::clone(&wake),
            Arc::clone(&sink_closed),
        );
        async move {
            let result = sender.await;
            if result.is_err() {
                // A closed destination ends the agent, like a signal but without a last export.
                closed.store(true, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
                wake.notify();
            }
            result
        }
    });

    let loop_ctx = SampleLoop {
        cfg: cfg.clone(),
        common,
        metrics: Arc::clone(&metrics),
        queue: Arc::clone(&queue),
        stop: Arc::clone(&stop),
        signalled_at: Arc::clone(&signalled_at),
        wake,
        sink_closed: Arc::clone(&sink_closed),
    };
    let mut summary = tokio::task::spawn_blocking(move || loop_ctx.run(sampler))
        .await
        .map_err(|e| AgentError::Config(format!("sampling thread failed: {e}")))??;
    signals.abort();

    if sink_closed.load(Ordering::SeqCst) {
        let left = queue.abandon();
        metrics.drop_samples(DropReason::SinkClosed, left.samples);
        metrics.export_batches_dropped.inc_by(left.batches);
        // The flag is only set once the sender has ended with the error.
        if let Ok(Err(closed)) = sender.await {
            return Err(AgentError::SinkClosed {
                source: closed,
                sent: metrics.samples_exported.get(),
                lost: metrics.samples_dropped_total(),
            });
        }
        return Err(AgentError::Config("the sender stopped unexpectedly".into()));
    }
    // Send what is pending until the deadline, then count whatever is left as dropped.
    let deadline = tokio::time::Instant::from_std(shutdown_deadline(&signalled_at, cfg));
    let _ = shutdown_tx.send(Some(deadline));
    let _ = tokio::time::timeout_at(deadline + Duration::from_millis(200), sender).await;
    let left = queue.abandon();
    if left.batches > 0 {
        metrics.drop_samples(DropReason::UnsentAtShutdown, left.samples);
        metrics.export_batches_dropped.inc_by(left.batches);
        tracing::warn!(
            "{} samples in {} requests were not sent before the shutdown deadline",
            left.samples,
            left.batches
        );
    }
    summary.sent = metrics.samples_exported.get();
    summary.dropped = metrics.samples_dropped_total();
    Ok(summary)
}

async fn wait_for_signal(
    mut term: Option<tokio::signal::unix::Signal>,
    stop: Arc<AtomicBool>,
    signalled_at: Arc<Mutex<Option<Instant>>>,
    wake: Arc<Wakeup>,
) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    *signalled_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    stop.store(true, Ordering::SeqCst);
    wake.notify();
}

/// Processes with a user frame in none of their known mappings.
fn outside_mappings(batch: &RawBatch, processes: &ProcessTable) -> std::collections::HashSet<Pid> {
    let mut found = std::collections::HashSet::new();
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

/// When everything must be done: `--shutdown-timeout` after the signal (or after now, when the
/// target exited), covering the last export's symbolization as well as the sending.
fn shutdown_deadline(signalled_at: &Mutex<Option<Instant>>, cfg: &Config) -> Instant {
    let from = signalled_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(Instant::now);
    from + cfg.shutdown_timeout
}

#[derive(Clone)]
struct SampleLoop {
    cfg: Config,
    common: Vec<KeyValue>,
    metrics: Arc<Metrics>,
    queue: Arc<ExportQueue>,
    stop: Arc<AtomicBool>,
    signalled_at: Arc<Mutex<Option<Instant>>>,
    /// Wakes the sampling thread: a signal arrived, or an unwind table was built.
    wake: Arc<Wakeup>,
    /// The sender found its destination closed for good: stop, and export nothing more.
    sink_closed: Arc<AtomicBool>,
}

/// State carried between export windows.
struct Window {
    aggregator: Aggregator,
    start: SystemTime,
    began: Instant,
}

impl Window {
    fn new() -> Self {
        Self {
            aggregator: Aggregator::default(),
            start: SystemTime::now(),
            began: Instant::now(),
        }
    }
}

/// One window for the export thread, with what symbolizing it needs.
struct Job {
    window: Window,
    /// The window's processes (sharing the open files of the sampling thread's table).
    processes: ProcessTable,
    resources: HashMap<Pid, ProcessResource>,
    /// Files no process maps any more: the symbolizer lets go of them after this window.
    forget: Vec<Arc<ObjectFile>>,
}

/// Symbolizes and encodes windows off the sampling thread, so a slow export (a cold symbolizer,
/// a large binary, a starved CPU) never delays a drain, nor the reaction to SIGTERM. At most one
/// window is in progress and one waits (the channel's bound): the sampling thread only hands
/// over a regular window when the thread is idle, and keeps aggregating otherwise.
struct ExportThread {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Requests queued for sending, one message per finished job.
    done: std::sync::mpsc::Receiver<u64>,
    /// Jobs handed over and not finished.
    outstanding: usize,
    /// Samples in those jobs (decremented by the thread as it queues them).
    samples: Arc<std::sync::atomic::AtomicU64>,
}

impl ExportThread {
    fn start(exporter: SampleLoop) -> Result<Self, AgentError> {
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
    fn finished(&mut self) -> Result<u64, AgentError> {
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

    fn idle(&self) -> bool {
        self.outstanding == 0
    }

    /// Hands a job over; `Err(samples)` if it could not be (the thread has died, or two jobs
    /// are waiting already, which the callers rule out).
    fn hand_over(&mut self, job: Job) -> Result<(), u64> {
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
    fn finish_by(&mut self, deadline: Instant) -> (u64, u64) {
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
    fn new(
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

impl SampleLoop {
    fn run(self, mut sampler: BpfSampler) -> Result<DaemonSummary, AgentError> {
        let mut processes = ProcessTable::default();
        let mut resources: HashMap<Pid, ProcessResource> = HashMap::new();
        let mut exporter = ExportThread::start(self.clone())?;
        let mut window = Window::new();
        let mut summary = DaemonSummary::default();
        let mut last_queue_drops = self.queue.dropped();
        let mut denied_warned = 0u64;
        let mut next_drain = Instant::now() + self.cfg.drain_interval;
        // `--duration`: sampling ends then, as on SIGTERM (the last window is exported).
        let end = self.cfg.duration.map(|d| Instant::now() + d);
        loop {
            // Asleep until the next drain (or the end of `--duration`), unless the kernel
            // announces a process (whose mappings are read at once, while it still exists), a
            // table is built, or a signal arrives.
            let wake_at = end.map_or(next_drain, |end| end.min(next_drain));
            while !self.stop.load(Ordering::SeqCst) && Instant::now() < wake_at {
                self.wake.wait(
                    &[sampler.announcements()],
                    wake_at.saturating_duration_since(Instant::now()),
                );
                for pid in sampler.new_processes() {
                    if processes.refresh(pid).is_ok() {
                        let comm = processes.get(pid).map_or(String::new(), |p| p.comm.clone());
                        if self.cfg.wants(&comm)
                            && let Some(info) = processes.get(pid)
                        {
                            sampler.update_process(info);
                        }
                        resources
                            .entry(pid)
                            .or_insert_with(|| resource::read_process_resource(pid.0, &comm));
                    }
                }
                sampler.retry_tables(&processes);
            }
            next_drain += self.cfg.drain_interval;
            let target_gone = self.cfg.pid.is_some_and(|p| !process::exists(p));
            let timed_out = end.is_some_and(|end| Instant::now() >= end);
            let stopping = self.stop.load(Ordering::SeqCst) || target_gone || timed_out;
            if stopping {
                sampler.stop();
            }
            let batch = sampler.drain()?;
            // Once stopping, no more unwind tables are loaded: nothing will be sampled with them,
            // and loading a large one on a starved CPU would eat into the shutdown deadline.
            let tables = (!stopping).then_some(&mut sampler);
            let batch = self.keep_wanted(batch, &mut processes, &mut resources, tables);
            summary.samples += batch.total();
            window.aggregator.add(batch);
            summary.stats = sampler.stats()?;
            self.metrics.observe_sampler(&summary.stats);
            summary.tables = sampler.table_stats();
            if let Some(tables) = &summary.tables {
                self.metrics.observe_tables(tables);
            }
            self.metrics.tick();
            let export_due = window.began.elapsed() >= self.cfg.export_interval;
            if stopping || export_due {
                // Quiet processes' exits (and programs executed in place) are noticed here,
                // once per window, rather than by re-reading every process on every drain.
                for pid in processes.revalidate() {
                    if let Some(info) = processes.get(pid)
                        && self.cfg.wants(&info.comm)
                    {
                        sampler.update_process(info);
                    }
                }
            }
            summary.requests += exporter.finished()?;
            if stopping && self.sink_closed.load(Ordering::SeqCst) {
                // Nowhere to send it: symbolizing the last window would be wasted work.
                self.metrics
                    .drop_samples(DropReason::SinkClosed, window.aggregator.total());
                summary.requests += exporter.finished().unwrap_or(0);
                return Ok(summary);
            }
            if stopping {
                let w = std::mem::replace(&mut window, Window::new());
                summary.requests += self.export_last(&mut exporter, w, &processes, &resources);
                summary.exports += 1;
                summary.target_exited = target_gone;
                return Ok(summary);
            }
            // While the export thread is still busy with the previous window, this one stays
            // open: windows get longer, nothing is lost, and at most one waits.
            if export_due && exporter.idle() {
                let w = std::mem::replace(&mut window, Window::new());
                let mut job = Job::new(w, &processes, &resources);
                // After the snapshot: exited processes stay in it for their last samples.
                let forgotten = processes.forget_exited();
                job.forget.clone_from(&forgotten.objects);
                if let Err(samples) = exporter.hand_over(job) {
                    self.metrics.drop_samples(DropReason::ExportFailed, samples);
                }
                summary.exports += 1;
                sampler.forget(&forgotten.pids);
                sampler.forget_objects(&forgotten.objects);
                resources.retain(|pid, _| processes.get(*pid).is_some());
            }
            let drops = self.queue.dropped();
            self.metrics.drop_samples(
                DropReason::QueueFull,
                drops.samples - last_queue_drops.samples,
            );
            self.metrics.drop_samples(
                DropReason::TooOld,
                drops.expired_samples - last_queue_drops.expired_samples,
            );
            self.metrics.export_batches_dropped.inc_by(
                drops.batches + drops.expired_batches
                    - last_queue_drops.batches
                    - last_queue_drops.expired_batches,
            );
            last_queue_drops = drops;
            self.metrics
                .export_queue_bytes
                .set(self.queue.bytes() as i64);
            if processes.object_denied > denied_warned {
                // Once per new batch of refusals, not per sample: the count is cumulative.
                if denied_warned == 0 {
                    tracing::warn!("{}", telemetry::denied_warning(processes.object_denied));
                }
                denied_warned = processes.object_denied;
            }
            self.metrics.processes_tracked.set(processes.len() as i64);
            self.metrics
                .observe_maps_lines_skipped(processes.maps_lines_skipped);
            self.metrics
                .open_objects
                .set(processes.open_objects() as i64);
        }
    }

    /// Exports the last window within the shutdown deadline, after any window the export
    /// thread still has. Symbolizing a busy node's window can take long on a starved CPU; if
    /// the deadline passes first, the samples not exported are counted as unsent and the agent
    /// exits on time (the kubelet would kill it at the end of the grace period anyway, losing
    /// everything).
    fn export_last(
        &self,
        exporter: &mut ExportThread,
        window: Window,
        processes: &ProcessTable,
        resources: &HashMap<Pid, ProcessResource>,
    ) -> u64 {
        let deadline = shutdown_deadline(&self.signalled_at, &self.cfg);
        if let Err(samples) = exporter.hand_over(Job::new(window, processes, resources)) {
            self.metrics
                .drop_samples(DropReason::UnsentAtShutdown, samples);
        }
        let (requests, unfinished) = exporter.finish_by(deadline);
        if unfinished > 0 {
            self.metrics
                .drop_samples(DropReason::UnsentAtShutdown, unfinished);
            tracing::warn!(
                "{unfinished} samples of the last windows were not ready before the shutdown deadline"
            );
        }
        requests
    }

    /// Reads the mappings of the batch's processes that need it (seen for the first time, or
    /// sampled outside the mappings known), reads each new process's resource attributes while
    /// it is alive, and drops samples of processes the filters exclude.
    fn keep_wanted(
        &self,
        mut batch: RawBatch,
        processes: &mut ProcessTable,
        resources: &mut HashMap<Pid, ProcessResource>,
        mut sampler: Option<&mut BpfSampler>,
    ) -> RawBatch {
        let mut pids: Vec<Pid> = batch.samples.iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let unmapped = outside_mappings(&batch, processes);
        let mut unwanted = Vec::new();
        for pid in pids {
            let reread = match processes.get(pid) {
                None => true,
                Some(p) => {
                    p.alive
                        && unmapped.contains(&pid)
                        && p.read_at.is_none_or(|at| at.elapsed() >= REREAD_UNMAPPED)
                }
            };
            let fresh = reread && processes.refresh(pid).is_ok();
            let comm = processes.get(pid).map_or("", |p| p.comm.as_str());
            if !self.cfg.wants(comm) {
                unwanted.push(pid);
                continue;
            }
            if fresh
                && let (Some(info), Some(sampler)) = (processes.get(pid), sampler.as_deref_mut())
            {
                sampler.update_process(info);
            }
            resources
                .entry(pid)
                .or_insert_with(|| resource::read_process_resource(pid.0, comm));
        }
        if !unwanted.is_empty() {
            batch.samples.retain(|s| !unwanted.contains(&s.pid));
        }
        batch
    }

    /// Symbolizes one window and queues its requests; returns how many.
    fn export(
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
            frequency: self.cfg.frequency,
            title: String::new(),
            node_wide: self.cfg.pid.is_none(),
        };
        let profile = profile::build(entries, processes, symbolizer, &meta);
        // Parsed symbol tables and DWARF are the bulk of the agent's memory; the per-address
        // results stay cached for the next window.
        symbolizer.release_parsed();
        self.metrics.observe_symbolizer(&symbolizer.stats);
        let resource_of = |p: &ProcessMeta| match resources.get(&p.pid) {
            Some(r) => process_attributes(r, &self.common),
            None => process_attributes(
                &ProcessResource {
                    pid: p.pid.0,
                    service_name: Some(p.name.clone()),
                    executable_name: p
                        .exe
                        .as_deref()
                        .and_then(|e| e.rsplit('/').next())
                        .map(str::to_owned),
                    executable_path: p.exe.clone(),
                    container_id: None,
                    pod_uid: None,
                },
                &self.common,
            ),
        };
        let (requests, too_large) =
            otlp::build_requests(&profile, &resource_of, self.cfg.otlp_max_message_bytes);
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
            let bytes = request.encoded_len();
            self.queue.push(request, bytes, samples);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::RawSample;
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
        let sample = |pid, frames: Vec<VirtAddr>| RawSample {
            pid,
            thread: crate::source::ThreadName::default(),
            user: StackSide::Frames(frames),
            kernel: StackSide::Absent,
            count: 1,
        };
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
}
