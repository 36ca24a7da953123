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
use crate::metrics::{self, Metrics};
use crate::process::{self, ProcessTable};
use crate::profile::{self, ProcessMeta, ProfileMeta};
use crate::resource::{self, ProcessResource};
use crate::source::{RawBatch, SampleSource};
use crate::symbolize::Symbolizer;
use crate::telemetry;
use crate::types::Pid;

/// How often, between drains, the stop flag and the kernel's new-process announcements are
/// checked: a process must live at least about this long for its mappings to be read.
const POLL: Duration = Duration::from_millis(20);

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
    let mut attrs = vec![
        string_kv("service.name", r.service_name.clone()),
        int_kv("process.pid", i64::from(r.pid)),
    ];
    if let Some(name) = &r.executable_name {
        attrs.push(string_kv("process.executable.name", name.clone()));
    }
    if let Some(path) = &r.executable_path {
        attrs.push(string_kv("process.executable.path", path.clone()));
    }
    if let Some(id) = &r.container_id {
        attrs.push(string_kv("container.id", id.clone()));
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
}

pub async fn run(cfg: &Config, kind: ExporterKind) -> Result<DaemonSummary, AgentError> {
    // SIGTERM and Ctrl-C are caught from the very start: a pod stopped while the agent is still
    // loading must exit 0, not die of the signal. Their arrival starts the one shutdown deadline.
    let stop = Arc::new(AtomicBool::new(false));
    let signalled_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let signals = tokio::spawn(wait_for_signal(
        term,
        Arc::clone(&stop),
        Arc::clone(&signalled_at),
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
    let sampler = BpfSampler::start(cfg.sampler_options())?;

    let queue = Arc::new(ExportQueue::new(cfg.export_queue_bytes));
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    let sender = tokio::spawn(sender::run(
        Arc::clone(&queue),
        sink,
        Arc::clone(&metrics),
        shutdown_rx,
    ));

    let loop_ctx = SampleLoop {
        cfg: cfg.clone(),
        common,
        metrics: Arc::clone(&metrics),
        queue: Arc::clone(&queue),
        stop: Arc::clone(&stop),
        signalled_at: Arc::clone(&signalled_at),
    };
    let mut summary = tokio::task::spawn_blocking(move || loop_ctx.run(sampler))
        .await
        .map_err(|e| AgentError::Config(format!("sampling thread failed: {e}")))??;
    signals.abort();

    // Send what is pending until the deadline, then count whatever is left as dropped.
    let deadline = tokio::time::Instant::from_std(shutdown_deadline(&signalled_at, cfg));
    let _ = shutdown_tx.send(Some(deadline));
    let _ = tokio::time::timeout_at(deadline + Duration::from_millis(200), sender).await;
    let left = queue.abandon();
    if left.batches > 0 {
        metrics.drop_samples("unsent_at_shutdown", left.samples);
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
) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    *signalled_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    stop.store(true, Ordering::SeqCst);
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

impl SampleLoop {
    fn run(self, mut sampler: BpfSampler) -> Result<DaemonSummary, AgentError> {
        let mut processes = ProcessTable::default();
        let mut resources: HashMap<Pid, ProcessResource> = HashMap::new();
        let mut symbolizer = Symbolizer::new();
        let mut window = Window::new();
        let mut summary = DaemonSummary::default();
        let mut last_queue_drops = self.queue.dropped();
        let mut denied_warned = 0u64;
        let mut next_drain = Instant::now() + self.cfg.drain_interval;
        loop {
            while !self.stop.load(Ordering::SeqCst) && Instant::now() < next_drain {
                std::thread::sleep(POLL.min(next_drain.saturating_duration_since(Instant::now())));
                for pid in sampler.new_processes() {
                    if processes.refresh(pid).is_ok() {
                        let comm = processes.get(pid).map_or(String::new(), |p| p.comm.clone());
                        if self.wanted(&comm)
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
            let stopping = self.stop.load(Ordering::SeqCst) || target_gone;
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
            self.metrics.observe_sampler(&sampler.stats()?);
            if let Some(tables) = sampler.table_stats() {
                self.metrics.observe_tables(&tables);
            }
            self.metrics.tick();
            if stopping {
                let w = std::mem::replace(&mut window, Window::new());
                drop(symbolizer);
                summary.requests += self.export_last(w, processes, resources);
                summary.exports += 1;
                summary.target_exited = target_gone;
                return Ok(summary);
            }
            if window.began.elapsed() >= self.cfg.export_interval {
                let w = std::mem::replace(&mut window, Window::new());
                summary.requests += self.export(w, &processes, &resources, &mut symbolizer);
                summary.exports += 1;
                let forgotten = processes.forget_exited();
                sampler.forget(&forgotten.pids);
                sampler.forget_objects(&forgotten.objects);
                symbolizer.forget(&forgotten.objects);
                resources.retain(|pid, _| processes.get(*pid).is_some());
            }
            let drops = self.queue.dropped();
            self.metrics
                .drop_samples("queue_full", drops.samples - last_queue_drops.samples);
            self.metrics
                .export_batches_dropped
                .inc_by(drops.batches - last_queue_drops.batches);
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
                .open_objects
                .set(processes.open_objects() as i64);
        }
    }

    /// Exports the last window within the shutdown deadline. Symbolizing a busy node's window
    /// can take long on a starved CPU; it runs on its own thread, and if the deadline passes
    /// first, the window's samples are counted as unsent and the agent exits on time (the
    /// kubelet would kill it at the end of the grace period anyway, losing everything).
    fn export_last(
        &self,
        window: Window,
        processes: ProcessTable,
        resources: HashMap<Pid, ProcessResource>,
    ) -> u64 {
        let deadline = shutdown_deadline(&self.signalled_at, &self.cfg);
        let samples = window.aggregator.total();
        let (done, result) = std::sync::mpsc::channel();
        let exporter = self.clone();
        let spawned = std::thread::Builder::new()
            .name("kalypso-last-export".into())
            .spawn(move || {
                // blazesym's symbolizer stays on the thread that made it; a new one starts cold,
                // which only the last window pays for.
                let mut symbolizer = Symbolizer::new();
                let requests = exporter.export(window, &processes, &resources, &mut symbolizer);
                let _ = done.send(requests);
            });
        if spawned.is_err() {
            self.metrics.drop_samples("unsent_at_shutdown", samples);
            return 0;
        }
        match result.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(requests) => requests,
            Err(_) => {
                self.metrics.drop_samples("unsent_at_shutdown", samples);
                tracing::warn!(
                    "{samples} samples of the last window were not ready before the shutdown deadline"
                );
                0
            }
        }
    }

    /// Whether the comm filters let a process through.
    fn wanted(&self, comm: &str) -> bool {
        let included = self
            .cfg
            .include_comm
            .as_ref()
            .is_none_or(|re| re.is_match(comm));
        let excluded = self
            .cfg
            .exclude_comm
            .as_ref()
            .is_some_and(|re| re.is_match(comm));
        included && !excluded
    }

    /// Refreshes mappings of the processes in the batch (reading each new process's resource
    /// attributes while it is alive) and drops samples of processes the filters exclude.
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
        let mut unwanted = Vec::new();
        for pid in pids {
            if processes.get(pid).is_none_or(|p| p.alive) {
                let _ = processes.refresh(pid);
            }
            let comm = processes.get(pid).map_or("", |p| p.comm.as_str());
            if !self.wanted(comm) {
                unwanted.push(pid);
                continue;
            }
            if let (Some(info), Some(sampler)) = (processes.get(pid), sampler.as_deref_mut()) {
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
            .drop_samples("aggregation_bound", window.aggregator.dropped());
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
                    service_name: p.name.clone(),
                    executable_name: p
                        .exe
                        .as_deref()
                        .and_then(|e| e.rsplit('/').next())
                        .map(str::to_owned),
                    executable_path: p.exe.clone(),
                    container_id: None,
                },
                &self.common,
            ),
        };
        let (requests, too_large) =
            otlp::build_requests(&profile, &resource_of, self.cfg.otlp_max_message_bytes);
        self.metrics.drop_samples("stack_too_large", too_large);
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
