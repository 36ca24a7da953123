//! Continuous mode (the DaemonSet): sample every process (or one), export every interval, never
//! block sampling on export, and flush what is pending on SIGTERM.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use tokio::sync::watch;

use crate::AgentError;
use crate::collect::bpf::BpfSampler;
use crate::collect::session;
use crate::collect::source::SamplerStats;
use crate::collect::wake::Wakeup;
use crate::collect::{Drained, Session, SessionOptions, StopReason, Tracker};
use crate::config::{Config, ExporterKind};
use crate::export::attributes::common_attributes;
use crate::export::queue::ExportQueue;
use crate::export::sender::{self, OtlpSettings, OtlpSink, Sink};
use crate::export::worker::{Encoder, ExportThread, Job, Window};
use crate::metrics::{self, DropReason, Metrics};
use crate::process::{self, ProcessTable};
use crate::telemetry;
use crate::unwind::loader::LoaderStats;

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
    let signals = session::watch_signals(
        Arc::clone(&stop),
        Arc::clone(&signalled_at),
        Arc::clone(&wake),
    );
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

/// When everything must be done: `--shutdown-timeout` after the signal (or after now, when the
/// target exited), covering the last export's symbolization as well as the sending.
fn shutdown_deadline(signalled_at: &Mutex<Option<Instant>>, cfg: &Config) -> Instant {
    let from = signalled_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_else(Instant::now);
    from + cfg.shutdown_timeout
}

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

impl SampleLoop {
    fn run(self, mut sampler: BpfSampler) -> Result<DaemonSummary, AgentError> {
        let mut exporter = ExportThread::start(Encoder {
            metrics: Arc::clone(&self.metrics),
            queue: Arc::clone(&self.queue),
            common: self.common.clone(),
            frequency: self.cfg.frequency,
            node_wide: self.cfg.pid.is_none(),
            max_message_bytes: self.cfg.otlp_max_message_bytes,
        })?;
        let mut summary = DaemonSummary::default();
        let mut last_queue_drops = self.queue.dropped();
        let mut denied_warned = 0u64;
        let tracker = Tracker::new(ProcessTable::default(), self.cfg.comm_filter(), true);
        let options = SessionOptions {
            target: self.cfg.pid,
            // `--duration`: sampling ends then, as on SIGTERM (the last window is exported).
            duration: self.cfg.duration,
            drain_interval: self.cfg.drain_interval,
            // On the windows' clock (the same interval, from the same start): the exited
            // processes found are forgotten after the next window's snapshot.
            revalidate_interval: self.cfg.export_interval,
        };
        let mut session = Session::new(
            &mut sampler,
            tracker,
            options,
            Arc::clone(&self.stop),
            Arc::clone(&self.wake),
        );
        let mut window = Window::new();
        loop {
            let Drained { batch, stop } = session.drain()?;
            let stopping = stop.is_some();
            summary.samples += batch.total();
            window.aggregator.add(batch);
            summary.stats = session.source_ref().stats()?;
            self.metrics.observe_sampler(&summary.stats);
            summary.tables = session.source_ref().table_stats();
            if let Some(tables) = &summary.tables {
                self.metrics.observe_tables(tables);
            }
            self.metrics.tick();
            let export_due = window.began.elapsed() >= self.cfg.export_interval;
            summary.requests += exporter.finished()?;
            if stopping && self.sink_closed.load(Ordering::SeqCst) {
                // Nowhere to send it: symbolizing the last window would be wasted work.
                self.metrics
                    .drop_samples(DropReason::SinkClosed, window.aggregator.total());
                summary.requests += exporter.finished().unwrap_or(0);
                return Ok(summary);
            }
            if stopping {
                let w = std::mem::take(&mut window);
                summary.requests += self.export_last(&mut exporter, w, &session.tracker);
                summary.exports += 1;
                summary.target_exited = matches!(stop, Some(StopReason::TargetExited(_)));
                return Ok(summary);
            }
            // While the export thread is still busy with the previous window, this one stays
            // open: windows get longer, nothing is lost, and at most one waits.
            if export_due && exporter.idle() {
                let w = std::mem::take(&mut window);
                let tracker = &mut session.tracker;
                let mut job = Job::new(w, &tracker.processes, tracker.resources());
                // After the snapshot: exited processes stay in it for their last samples.
                let forgotten = tracker.processes.forget_exited();
                tracker.retain_known();
                job.forget.clone_from(&forgotten.objects);
                if let Err(samples) = exporter.hand_over(job) {
                    self.metrics.drop_samples(DropReason::ExportFailed, samples);
                }
                summary.exports += 1;
                session.source().forget(&forgotten.pids);
                session.source().forget_objects(&forgotten.objects);
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
            let processes = &session.tracker.processes;
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
    fn export_last(&self, exporter: &mut ExportThread, window: Window, tracker: &Tracker) -> u64 {
        let deadline = shutdown_deadline(&self.signalled_at, &self.cfg);
        let job = Job::new(window, &tracker.processes, tracker.resources());
        if let Err(samples) = exporter.hand_over(job) {
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
}
