//! Kalypso's agent: loads the eBPF sampler, aggregates and symbolizes stacks, writes profiles.
//!
//! Stages, each in its own module: [`collect`] (the sampler, the only aya user, and the one
//! session loop both modes run) → [`aggregate`] → [`symbolize`] + [`profile`] → [`export`].
//! [`local`] runs the loop and writes a file ([`record`]); [`daemon`] runs it and hands each
//! window to export.
//!
//! Modules are `pub(crate)` unless the binary, the integration tests or the fuzz targets use
//! them, so that the compiler reports what nothing calls.
pub(crate) mod aggregate;
pub mod collect;
pub mod config;
pub mod daemon;
pub(crate) mod debuginfo;
pub mod elf;
pub mod export;
pub mod gopclntab;
pub mod local;
pub(crate) mod maps;
pub(crate) mod metrics;
pub mod process;
pub(crate) mod profile;
pub(crate) mod record;
pub mod resource;
pub(crate) mod seccomp;
pub mod sigbus;
pub mod summary;
pub mod symbolize;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod types;
pub mod unwind;

use std::path::PathBuf;

use types::Pid;

/// Everything that ends a run, each with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no process with pid {0}")]
    NoSuchProcess(Pid),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error("cannot write {}: {message}", path.display())]
    Output { path: PathBuf, message: String },
    #[error("cannot tell the output format of {}: use .svg, .pb.gz, .pprof, .folded or .txt, or --format", .0.display())]
    UnknownFormat(PathBuf),
    #[error(transparent)]
    Bpf(#[from] collect::bpf::BpfError),
    #[error(transparent)]
    Source(#[from] collect::source::SourceError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error("{0}")]
    Config(String),
    /// The export destination closed for good (stdout's reader went away): exit non-zero, as a
    /// pipeline that lost data should.
    #[error("{source}; {sent} samples were written, {lost} were not")]
    SinkClosed {
        source: export::sender::SinkClosed,
        sent: u64,
        lost: u64,
    },
    #[error(
        "no samples: the sampler never fired in {0:.1} s (no cpu-clock ticks reached the eBPF program); nothing written"
    )]
    SamplerSilent(f64),
}
