//! `/metrics` (OpenMetrics text, via prometheus-client) and `/healthz`, on `--metrics-addr`.
//! Counters are atomics updated by the stages; nothing here is per-sample work.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use profiler_common::Stat;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::collect::source::SamplerStats;
use crate::symbolize::SymbolizerStats;
use crate::unwind::loader::LoaderStats;

type Labels = Vec<(&'static str, &'static str)>;

/// Why samples are lost after the kernel counted them (the `reason` label of
/// `kalypso_samples_dropped_total`). A closed set: every reason is exported from the start and
/// counted in [`Metrics::samples_dropped_total`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The export queue was full: the oldest requests went.
    QueueFull,
    /// The collector rejected the request (not retried).
    ExportRejected,
    /// Not sent before the shutdown deadline.
    UnsentAtShutdown,
    /// A stack too large for one request.
    StackTooLarge,
    /// More distinct stacks in a window than the aggregator holds.
    AggregationBound,
    /// The export thread could not take the window.
    ExportFailed,
    /// The destination closed for good (stdout's reader went away).
    SinkClosed,
    /// Queued longer than Pyroscope accepts (`export::queue::MAX_BATCH_AGE`) before it could be
    /// sent.
    TooOld,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::QueueFull,
        DropReason::ExportRejected,
        DropReason::UnsentAtShutdown,
        DropReason::StackTooLarge,
        DropReason::AggregationBound,
        DropReason::ExportFailed,
        DropReason::SinkClosed,
        DropReason::TooOld,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportRejected => "export_rejected",
            DropReason::UnsentAtShutdown => "unsent_at_shutdown",
            DropReason::StackTooLarge => "stack_too_large",
            DropReason::AggregationBound => "aggregation_bound",
            DropReason::ExportFailed => "export_failed",
            DropReason::SinkClosed => "sink_closed",
            DropReason::TooOld => "too_old",
        }
    }
}

/// /healthz fails once the sampling loop has not completed a tick for this long.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

pub struct Metrics {
    registry: Registry,
    /// Kernel-side counters, by `Stat` name.
    pub kernel: Family<Labels, Counter>,
    /// Samples lost after the kernel counted them, by [`DropReason`] (only through
    /// [`Metrics::drop_samples`]).
    samples_dropped: Family<Labels, Counter>,
    pub samples_exported: Counter,
    /// Export attempts by result: success, failure (will retry), rejected (not retried).
    pub export_requests: Family<Labels, Counter>,
    pub export_bytes: Counter,
    pub export_queue_bytes: Gauge,
    pub export_batches_dropped: Counter,
    pub symbolizer: Family<Labels, Counter>,
    /// Samples whose user stack was cut at a frame-pointer walk that looped outside code.
    user_stacks_cut: Counter,
    pub processes_tracked: Gauge,
    pub open_objects: Gauge,
    /// Lines of `/proc/PID/maps` that did not parse (skipped), cumulative.
    maps_lines_skipped: Counter,
    last_maps_lines_skipped: AtomicU64,
    /// Unwind tables waiting for the background builder now.
    unwind_builds_pending: Gauge,
    /// Unwind tables by event (loaded, evicted, error, too_big), cumulative.
    unwind_tables: Family<Labels, Counter>,
    /// Bytes of the kernel's unwind-row array in use.
    unwind_table_bytes: Gauge,
    /// Processes whose mappings the kernel-side unwinder holds.
    unwind_processes: Gauge,
    last_tables: Mutex<LoaderStats>,
    last_kernel: Mutex<SamplerStats>,
    last_symbolizer: Mutex<SymbolizerStats>,
    /// Reads through mappings of files truncated under them (see `sigbus`), cumulative.
    mapped_file_faults: Counter,
    last_mapped_file_faults: AtomicU64,
    /// Unix seconds of the last completed sampling tick.
    pub last_tick: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kalypso");
        let kernel = Family::<Labels, Counter>::default();
        registry.register(
            "bpf_events",
            "Kernel-side sampler counters, by event",
            kernel.clone(),
        );
        let samples_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "samples_dropped",
            "Samples lost after the kernel counted them, by reason",
            samples_dropped.clone(),
        );
        let samples_exported = Counter::default();
        registry.register(
            "samples_exported",
            "Samples in successfully exported requests",
            samples_exported.clone(),
        );
        let export_requests = Family::<Labels, Counter>::default();
        registry.register(
            "export_requests",
            "Export attempts, by result",
            export_requests.clone(),
        );
        let export_bytes = Counter::default();
        registry.register(
            "export_bytes",
            "Encoded bytes of successfully exported requests",
            export_bytes.clone(),
        );
        let export_queue_bytes = Gauge::default();
        registry.register(
            "export_queue_bytes",
            "Bytes waiting in the export queue",
            export_queue_bytes.clone(),
        );
        let export_batches_dropped = Counter::default();
        registry.register(
            "export_batches_dropped",
            "Batches dropped (queue full, rejected, or unsent at shutdown)",
            export_batches_dropped.clone(),
        );
        let symbolizer = Family::<Labels, Counter>::default();
        registry.register(
            "symbolizer_lookups",
            "Symbolizer cache lookups, by result (unknown: unresolved; error: of those, in files that could not be read)",
            symbolizer.clone(),
        );
        let user_stacks_cut = Counter::default();
        registry.register(
            "user_stacks_cut",
            "Samples whose user stack was cut where the kernel's frame-pointer walk repeated an address outside code (the rest was no call chain)",
            user_stacks_cut.clone(),
        );
        let processes_tracked = Gauge::default();
        registry.register(
            "processes_tracked",
            "Processes whose mappings are held",
            processes_tracked.clone(),
        );
        let open_objects = Gauge::default();
        registry.register(
            "open_objects",
            "ELF files held open for symbolization",
            open_objects.clone(),
        );
        let maps_lines_skipped = Counter::default();
        registry.register(
            "maps_lines_skipped",
            "Lines of /proc/PID/maps that did not parse and were skipped",
            maps_lines_skipped.clone(),
        );
        let unwind_builds_pending = Gauge::default();
        registry.register(
            "unwind_builds_pending",
            "Unwind tables waiting for the background builder",
            unwind_builds_pending.clone(),
        );
        let unwind_tables = Family::<Labels, Counter>::default();
        registry.register(
            "unwind_tables",
            "Unwind tables loaded into the kernel, reused, evicted, failed to build, too big to load; processes not written; builds not queued (queue full, retried later)",
            unwind_tables.clone(),
        );
        let unwind_table_bytes = Gauge::default();
        registry.register(
            "unwind_table_bytes",
            "Bytes of the kernel's unwind-row array in use",
            unwind_table_bytes.clone(),
        );
        let unwind_processes = Gauge::default();
        registry.register(
            "unwind_processes",
            "Processes whose stacks are unwound with tables",
            unwind_processes.clone(),
        );
        let mapped_file_faults = Counter::default();
        registry.register(
            "mapped_file_faults",
            "Reads through a mapping of a file that was truncated under it, survived (read as zeros)",
            mapped_file_faults.clone(),
        );
        for event in [
            "loaded",
            "reused",
            "evicted",
            "error",
            "too_big",
            "process_error",
            "build_queue_full",
        ] {
            let _ = unwind_tables.get_or_create(&vec![("event", event)]);
        }
        // Every series exists from the start (at zero), so dashboards and alerts see it before
        // the first sample, export or drop.
        for stat in Stat::ALL {
            let _ = kernel.get_or_create(&vec![("event", stat.name())]);
        }
        for reason in DropReason::ALL {
            let _ = samples_dropped.get_or_create(&vec![("reason", reason.name())]);
        }
        for result in ["success", "failure", "rejected"] {
            let _ = export_requests.get_or_create(&vec![("result", result)]);
        }
        for result in ["hit", "miss", "unknown", "error"] {
            let _ = symbolizer.get_or_create(&vec![("result", result)]);
        }
        Self {
            registry,
            kernel,
            samples_dropped,
            samples_exported,
            export_requests,
            export_bytes,
            export_queue_bytes,
            export_batches_dropped,
            symbolizer,
            user_stacks_cut,
            processes_tracked,
            open_objects,
            maps_lines_skipped,
            last_maps_lines_skipped: AtomicU64::new(0),
            unwind_builds_pending,
            unwind_tables,
            unwind_table_bytes,
            unwind_processes,
            last_tables: Mutex::default(),
            last_kernel: Mutex::default(),
            last_symbolizer: Mutex::default(),
            mapped_file_faults,
            last_mapped_file_faults: AtomicU64::new(0),
            last_tick: AtomicU64::new(now_secs()),
        }
    }

    /// Folds cumulative kernel counters into the Prometheus counters.
    pub fn observe_sampler(&self, stats: &SamplerStats) {
        let mut last = self.last_kernel.lock().unwrap_or_else(|e| e.into_inner());
        for stat in Stat::ALL {
            let delta = stats.get(stat).saturating_sub(last.get(stat));
            self.kernel
                .get_or_create(&vec![("event", stat.name())])
                .inc_by(delta);
        }
        *last = stats.clone();
    }

    /// Folds the unwind-table loader's counters in.
    pub fn observe_tables(&self, stats: &LoaderStats) {
        let mut last = self.last_tables.lock().unwrap_or_else(|e| e.into_inner());
        for (event, now, before) in [
            ("loaded", stats.tables_loaded, last.tables_loaded),
            ("reused", stats.tables_reused, last.tables_reused),
            ("evicted", stats.tables_evicted, last.tables_evicted),
            ("error", stats.table_errors, last.table_errors),
            ("too_big", stats.tables_too_big, last.tables_too_big),
            ("process_error", stats.process_errors, last.process_errors),
            (
                "build_queue_full",
                stats.build_queue_full,
                last.build_queue_full,
            ),
        ] {
            self.unwind_tables
                .get_or_create(&vec![("event", event)])
                .inc_by(now.saturating_sub(before));
        }
        self.unwind_table_bytes
            .set((stats.chunks_in_use * u64::from(profiler_common::UNWIND_CHUNK_BYTES)) as i64);
        self.unwind_processes.set(stats.processes as i64);
        self.unwind_builds_pending.set(stats.builds_pending as i64);
        *last = *stats;
    }

    /// Folds in the process table's cumulative count of unparsable maps lines.
    pub fn observe_maps_lines_skipped(&self, total: u64) {
        let before = self.last_maps_lines_skipped.swap(total, Ordering::Relaxed);
        self.maps_lines_skipped.inc_by(total.saturating_sub(before));
    }

    pub fn observe_symbolizer(&self, stats: &SymbolizerStats) {
        let mut last = self
            .last_symbolizer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (result, now, before) in [
            ("hit", stats.cache_hits, last.cache_hits),
            ("miss", stats.cache_misses, last.cache_misses),
            ("unknown", stats.unknown, last.unknown),
            ("error", stats.errors, last.errors),
        ] {
            self.symbolizer
                .get_or_create(&vec![("result", result)])
                .inc_by(now.saturating_sub(before));
        }
        self.user_stacks_cut
            .inc_by(stats.walk_loops.saturating_sub(last.walk_loops));
        *last = *stats;
    }

    pub fn drop_samples(&self, reason: DropReason, samples: u64) {
        self.samples_dropped
            .get_or_create(&vec![("reason", reason.name())])
            .inc_by(samples);
    }

    /// All samples dropped after collection, whatever the reason.
    pub fn samples_dropped_total(&self) -> u64 {
        DropReason::ALL
            .iter()
            .map(|r| {
                self.samples_dropped
                    .get_or_create(&vec![("reason", r.name())])
                    .get()
            })
            .sum()
    }

    pub fn export_result(&self, result: &'static str) {
        self.export_requests
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub fn tick(&self) {
        self.last_tick.store(now_secs(), Ordering::Relaxed);
        let faults = crate::sigbus::recovered();
        let before = self.last_mapped_file_faults.swap(faults, Ordering::Relaxed);
        self.mapped_file_faults
            .inc_by(faults.saturating_sub(before));
    }

    pub fn healthy(&self) -> bool {
        now_secs().saturating_sub(self.last_tick.load(Ordering::Relaxed)) < STALL_LIMIT.as_secs()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for /metrics: {source}")]
pub struct ServeError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds now (so a busy port is a start-up error) and serves in the background.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError { addr, source })?;
    let for_metrics = Arc::clone(&metrics);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&for_metrics);
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            // What prometheus-client's encoder writes (it ends in `# EOF`).
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = Arc::clone(&metrics);
                async move {
                    if m.healthy() {
                        (StatusCode::OK, "ok\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "sampling stalled\n").into_response()
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_counters_advance_by_deltas() {
        let m = Metrics::new();
        let mut s = SamplerStats::default();
        s.counts[Stat::Counted as usize] = 10;
        m.observe_sampler(&s);
        s.counts[Stat::Counted as usize] = 25;
        m.observe_sampler(&s);
        let text = m.encode();
        assert!(
            text.contains("kalypso_bpf_events_total{event=\"counted\"} 25"),
            "{text}"
        );
    }

    #[test]
    fn every_series_exists_before_anything_happens() {
        let text = Metrics::new().encode();
        for series in [
            "kalypso_bpf_events_total{event=\"count_map_full\"} 0",
            "kalypso_samples_dropped_total{reason=\"queue_full\"} 0",
            "kalypso_export_requests_total{result=\"failure\"} 0",
            "kalypso_symbolizer_lookups_total{result=\"miss\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn every_drop_reason_counts_in_the_total() {
        let m = Metrics::new();
        for (n, reason) in DropReason::ALL.into_iter().enumerate() {
            m.drop_samples(reason, n as u64 + 1);
        }
        let all = DropReason::ALL.len() as u64;
        assert_eq!(m.samples_dropped_total(), all * (all + 1) / 2);
        let text = m.encode();
        for (n, reason) in DropReason::ALL.into_iter().enumerate() {
            let series = format!(
                "kalypso_samples_dropped_total{{reason=\"{}\"}} {}",
                reason.name(),
                n + 1
            );
            assert!(text.contains(&series), "{series} missing from:\n{text}");
        }
        let names: std::collections::HashSet<_> = DropReason::ALL.map(DropReason::name).into();
        assert_eq!(names.len(), DropReason::ALL.len(), "names are distinct");
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new()))
            .await
            .unwrap();
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_owned)
            })
            .unwrap();
        // The body is OpenMetrics text (it ends in `# EOF`), and says so.
        assert!(body.trim_end().ends_with("# EOF"), "{body}");
        assert_eq!(
            content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
    }

    #[test]
    fn loader_and_process_table_counters_are_exported() {
        let m = Metrics::new();
        m.observe_tables(&LoaderStats {
            build_queue_full: 3,
            builds_pending: 5,
            ..LoaderStats::default()
        });
        m.observe_maps_lines_skipped(2);
        m.observe_maps_lines_skipped(4);
        let text = m.encode();
        for series in [
            "kalypso_unwind_tables_total{event=\"build_queue_full\"} 3",
            "kalypso_unwind_builds_pending 5",
            "kalypso_maps_lines_skipped_total 4",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn reports_drops_by_reason() {
        let m = Metrics::new();
        m.drop_samples(DropReason::QueueFull, 7);
        assert!(
            m.encode()
                .contains("kalypso_samples_dropped_total{reason=\"queue_full\"} 7")
        );
    }
}
