//! The command line (`config::Config::try_parse_from`, with its value parsers) and the OTLP
//! settings derived from it (`OtlpSink::new` validates endpoint and headers): any arguments,
//! NUL-separated, not necessarily UTF-8. Never panics.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use profiler_agent::config::Config;
use profiler_agent::export::sender::{OtlpSettings, OtlpSink};

/// `OtlpSink::new` spawns the channel's worker: it needs a runtime, one that runs the tasks of
/// dropped sinks to their end.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

fuzz_target!(
    init: {
        // Only the arguments decide: no PROFILER_* or OTEL_* variable from the environment.
        for (name, _) in std::env::vars_os() {
            let name_bytes = name.as_bytes();
            if name_bytes.starts_with(b"PROFILER_") || name_bytes.starts_with(b"OTEL_") {
                // SAFETY: the fuzzer has not started any other thread yet.
                unsafe { std::env::remove_var(&name) };
            }
        }
    },
    |data: &[u8]| {
        let args = std::iter::once(OsString::from("profiler-agent"))
            .chain(data.split(|&b| b == 0).map(|a| std::ffi::OsStr::from_bytes(a).to_owned()));
        let Ok(config) = Config::try_parse_from(args) else {
            return;
        };
        let _ = (config.mode(), config.output_format(), config.sampler_options());
        let Ok(headers) = config.otlp_headers() else {
            return;
        };
        let _guard = runtime().enter();
        let _ = OtlpSink::new(&OtlpSettings {
            endpoint: config.otlp_endpoint(),
            headers,
            // Reading whatever file an input names is not what is under test.
            ca_file: None,
            max_message_bytes: config.otlp_max_message_bytes,
        });
    }
);
