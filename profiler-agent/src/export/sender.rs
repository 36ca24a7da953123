//! Sends queued requests: OTLP over gRPC (gzip, TLS, headers), JSON on stdout, or nowhere. Retries
//! with exponential backoff and jitter; gives up only on errors a retry cannot fix.
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::profiles::v1development::{
    ExportProfilesServiceRequest, ExportProfilesServiceResponse,
};
use prost::Message;
use prost::bytes::{BufMut, Bytes};
use tokio::sync::watch;
use tonic::codec::{CompressionEncoding, DecodeBuf, EncodeBuf};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::queue::ExportQueue;
use crate::metrics::{DropReason, Metrics};

/// How long one Export call may take before it counts as failed (a stalled collector).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SinkConfigError {
    #[error("invalid OTLP endpoint `{0}`: expected http://host:port or https://host:port")]
    Endpoint(String),
    #[error("cannot read the OTLP CA certificate {}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid OTLP TLS settings: {0}")]
    Tls(String),
    #[error("invalid OTLP header `{0}`: expected key=value with a valid gRPC metadata key")]
    Header(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: unreachable, unavailable, timed out, overloaded.
    #[error("{0}")]
    Transient(String),
    /// A retry cannot help (rejected as invalid, unauthenticated): the batch is dropped.
    #[error("{0}")]
    Permanent(String),
    /// The destination is gone for good (stdout's reader closed the pipe): nothing more can be
    /// sent, and the agent stops.
    #[error("stdout was closed ({0})")]
    Closed(#[source] std::io::Error),
}

/// Why the sender stopped before it was told to.
#[derive(Debug, thiserror::Error)]
#[error("{0}: stopped exporting")]
pub struct SinkClosed(#[source] pub SendError);

/// Where requests go.
pub enum Sink {
    /// Boxed: the client is large and the other variants are empty.
    Otlp(Box<OtlpSink>),
    /// One JSON object per line on stdout (for debugging).
    Stdout,
    /// Discard (sampling and aggregation still run, e.g. for benchmarks).
    None,
}

impl Sink {
    /// Sends one encoded `ExportProfilesServiceRequest`.
    async fn send(&mut self, request: &Bytes) -> Result<(), SendError> {
        match self {
            Sink::Otlp(s) => s.send(request.clone()).await,
            Sink::Stdout => {
                let decoded = ExportProfilesServiceRequest::decode(request.clone())
                    .map_err(|e| SendError::Permanent(e.to_string()))?;
                let line = serde_json::to_string(&decoded)
                    .map_err(|e| SendError::Permanent(e.to_string()))?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}")
                    .and_then(|_| out.flush())
                    .map_err(|e| match e.kind() {
                        // The reader is gone (`| head`): no retry brings it back.
                        std::io::ErrorKind::BrokenPipe => SendError::Closed(e),
                        _ => SendError::Transient(e.to_string()),
                    })
            }
            Sink::None => Ok(()),
        }
    }
}

pub struct OtlpSink {
    client: tonic::client::Grpc<Channel>,
    headers: MetadataMap,
}

/// The Export method of the OTLP profiles service.
const EXPORT_PATH: &str =
    "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";

/// gRPC codec for requests encoded when they were queued: their bytes go out as they are, and
/// the response is decoded as the generated client would.
#[derive(Clone, Copy, Debug, Default)]
struct EncodedRequests;

impl tonic::codec::Codec for EncodedRequests {
    type Encode = Bytes;
    type Decode = ExportProfilesServiceResponse;
    type Encoder = EncodedRequests;
    type Decoder = EncodedRequests;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl tonic::codec::Encoder for EncodedRequests {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for EncodedRequests {
    type Item = ExportProfilesServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportProfilesServiceResponse>, tonic::Status> {
        ExportProfilesServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable export response: {e}")))
    }
}

/// Connection settings for the OTLP sink.
#[derive(Clone, Debug, Default)]
pub struct OtlpSettings {
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub max_message_bytes: usize,
}

impl OtlpSink {
    /// Validates everything that can be checked offline; the connection itself is made lazily, so
    /// an unreachable collector does not stop the agent from sampling.
    pub fn new(settings: &OtlpSettings) -> Result<Self, SinkConfigError> {
        let raw = settings.endpoint.trim();
        let uri = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let parsed = tonic::codegen::http::Uri::from_str(&uri)
            .map_err(|_| SinkConfigError::Endpoint(raw.into()))?;
        let https = match parsed.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(SinkConfigError::Endpoint(raw.into())),
        };
        if parsed.host().is_none_or(str::is_empty) {
            return Err(SinkConfigError::Endpoint(raw.into()));
        }
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|_| SinkConfigError::Endpoint(raw.into()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(REQUEST_TIMEOUT);
        if https || settings.ca_file.is_some() {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &settings.ca_file {
                let pem = std::fs::read(path).map_err(|source| SinkConfigError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| SinkConfigError::Tls(e.to_string()))?;
        }
        let mut headers = MetadataMap::new();
        for (k, v) in &settings.headers {
            let key = MetadataKey::from_str(&k.to_ascii_lowercase())
                .map_err(|_| SinkConfigError::Header(format!("{k}={v}")))?;
            let value = MetadataValue::from_str(v)
                .map_err(|_| SinkConfigError::Header(format!("{k}={v}")))?;
            headers.insert(key, value);
        }
        let client = tonic::client::Grpc::new(endpoint.connect_lazy())
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_encoding_message_size(settings.max_message_bytes.max(1));
        Ok(Self { client, headers })
    }

    async fn send(&mut self, request: Bytes) -> Result<(), SendError> {
        let mut req = tonic::Request::new(request);
        *req.metadata_mut() = self.headers.clone();
        req.set_timeout(REQUEST_TIMEOUT);
        let sent = match self.client.ready().await {
            Ok(()) => {
                self.client
                    .unary(req, PathAndQuery::from_static(EXPORT_PATH), EncodedRequests)
                    .await
            }
            Err(e) => Err(tonic::Status::unknown(format!("not ready: {e}"))),
        };
        match sent {
            Ok(response) => {
                if let Some(partial) = response.into_inner().partial_success
                    && partial.rejected_profiles > 0
                {
                    return Err(SendError::Permanent(format!(
                        "collector rejected {} profiles: {}",
                        partial.rejected_profiles, partial.error_message
                    )));
                }
                Ok(())
            }
            Err(status) => {
                use tonic::Code::*;
                let text = format!("{:?}: {}", status.code(), status.message());
                match status.code() {
                    InvalidArgument | Unauthenticated | PermissionDenied | Unimplemented
                    | FailedPrecondition => Err(SendError::Permanent(text)),
                    _ => Err(SendError::Transient(text)),
                }
            }
        }
    }
}

/// Backoff before retry number `attempt` (0-based): doubling from 0.5 s up to 30 s, with half of
/// it random so that many agents do not retry in step.
pub fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let half = full / 2;
    half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
}

/// When to stop: `None` while running; `Some(deadline)` once shutting down (send what is queued
/// until then, then give up and count the rest).
pub type ShutdownSignal = watch::Receiver<Option<tokio::time::Instant>>;

/// Sends queued batches until shutdown, oldest first, retrying transient failures. Returns early
/// with the error when the destination is closed for good ([`SendError::Closed`]), leaving the
/// batch that failed and the rest in the queue.
pub async fn run(
    queue: Arc<ExportQueue>,
    mut sink: Sink,
    metrics: Arc<Metrics>,
    mut shutdown: ShutdownSignal,
) -> Result<(), SinkClosed> {
    let mut failing = false;
    loop {
        let deadline = *shutdown.borrow();
        let Some(batch) = queue.front() else {
            if deadline.is_some() {
                return Ok(());
            }
            tokio::select! {
                _ = queue.wait() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        let mut attempt = 0;
        loop {
            let limit = deadline.or(*shutdown.borrow());
            let result = match limit {
                Some(d) => tokio::time::timeout_at(d, sink.send(&batch.request))
                    .await
                    .unwrap_or_else(|_| {
                        Err(SendError::Transient("shutdown deadline reached".into()))
                    }),
                None => sink.send(&batch.request).await,
            };
            match result {
                Ok(()) => {
                    if failing {
                        tracing::info!("export recovered");
                        failing = false;
                    }
                    metrics.export_result("success");
                    metrics.samples_exported.inc_by(batch.samples);
                    metrics.export_bytes.inc_by(batch.bytes as u64);
                    queue.remove(batch.id);
                    break;
                }
                Err(SendError::Permanent(e)) => {
                    tracing::error!("export rejected, dropping {} samples: {e}", batch.samples);
                    metrics.export_result("rejected");
                    metrics.drop_samples(DropReason::ExportRejected, batch.samples);
                    metrics.export_batches_dropped.inc();
                    queue.remove(batch.id);
                    break;
                }
                Err(e @ SendError::Closed(_)) => {
                    metrics.export_result("failure");
                    return Err(SinkClosed(e));
                }
                Err(SendError::Transient(e)) => {
                    // Log the change of state, not every retry.
                    if !failing {
                        tracing::warn!("export failing, will retry: {e}");
                        failing = true;
                    }
                    metrics.export_result("failure");
                    let limit = *shutdown.borrow();
                    if limit.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Ok(());
                    }
                    let wait = backoff(attempt);
                    attempt += 1;
                    let sleep_until = tokio::time::Instant::now() + wait;
                    let until = limit.map_or(sleep_until, |d| d.min(sleep_until));
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = shutdown.changed() => {}
                    }
                    // Evicted for space while we waited: move on to what is queued now.
                    if queue.front().is_none_or(|f| f.id != batch.id) {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_with_jitter() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let full = BACKOFF_FIRST
                .saturating_mul(1 << attempt.min(16))
                .min(BACKOFF_MAX);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(30) <= BACKOFF_MAX);
    }

    #[tokio::test]
    async fn endpoints_are_validated_offline() {
        let ok = |e: &str| {
            OtlpSink::new(&OtlpSettings {
                endpoint: e.into(),
                max_message_bytes: 1,
                ..Default::default()
            })
        };
        assert!(ok("http://127.0.0.1:4317").is_ok());
        assert!(ok("localhost:4317").is_ok());
        assert!(ok("https://collector.example:4317").is_ok());
        assert!(matches!(ok("ftp://x:1"), Err(SinkConfigError::Endpoint(_))));
        assert!(matches!(ok("http://"), Err(SinkConfigError::Endpoint(_))));
        assert!(matches!(
            ok("::not a uri::"),
            Err(SinkConfigError::Endpoint(_))
        ));
    }

    #[tokio::test]
    async fn a_missing_ca_file_is_a_clear_error() {
        let err = OtlpSink::new(&OtlpSettings {
            endpoint: "https://c:4317".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            max_message_bytes: 1,
            ..Default::default()
        });
        let Err(e) = err else {
            panic!("accepted a missing CA file")
        };
        assert!(e.to_string().contains("/nonexistent/ca.pem"));
    }

    #[tokio::test]
    async fn header_keys_must_be_valid_metadata() {
        let s = |k: &str| OtlpSettings {
            endpoint: "http://c:1".into(),
            headers: vec![(k.into(), "v".into())],
            max_message_bytes: 1,
            ..Default::default()
        };
        assert!(OtlpSink::new(&s("X-Scope-OrgID")).is_ok());
        assert!(matches!(
            OtlpSink::new(&s("bad key")),
            Err(SinkConfigError::Header(_))
        ));
    }
}
