//! `cargo xtask fuzz`: builds the fuzz targets in `fuzz/` with cargo-fuzz (libFuzzer) and runs
//! each for a fixed time, failing on the first crash with the path of its reproducer.
//!
//! cargo-fuzz needs nightly compiler flags: rustup's nightly where there is one, else the
//! current toolchain with `RUSTC_BOOTSTRAP=1`. AddressSanitizer is used where the compiler ships
//! its runtime (rustup's toolchains do, Debian's `rustc-web` does not).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::setup::{self, cargo_bin_dir, workspace_root};

pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(clap::Args)]
pub struct Options {
    /// How long to run each target.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// `address` (AddressSanitizer) or `none`; default: address where the compiler has it.
    #[arg(long)]
    pub sanitizer: Option<Sanitizer>,
    /// Targets to run (names in fuzz/fuzz_targets/); default: all of them.
    pub targets: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sanitizer {
    Address,
    None,
}

/// What one target did in its run.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunStats {
    executions: Option<u64>,
    /// Where libFuzzer wrote the input that crashed it.
    crash: Option<PathBuf>,
}

/// How cargo-fuzz is invoked: which compiler, and whether it has the ASan runtime.
struct Toolchain {
    rustup_nightly: bool,
    has_asan: bool,
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("fuzz")
}

/// Everything the fuzz build and runs write lives under target/fuzz.
fn work_dir() -> PathBuf {
    workspace_root().join("target/fuzz")
}

/// The targets: one `fuzz/fuzz_targets/<name>.rs` each, sorted.
pub fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn pick_toolchain() -> Toolchain {
    let sysroot = |cmd: &mut Command| {
        cmd.output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    };
    let nightly =
        sysroot(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]));
    let rustup_nightly = nightly.is_some();
    let root = nightly.or_else(|| sysroot(Command::new("rustc").args(["--print", "sysroot"])));
    let has_asan = root.is_some_and(|root| has_asan_runtime(&root));
    Toolchain {
        rustup_nightly,
        has_asan,
    }
}

/// Whether a sysroot ships the AddressSanitizer runtime (`librustc-<channel>_rt.asan.a`).
fn has_asan_runtime(sysroot: &Path) -> bool {
    let host = if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    };
    let lib = sysroot.join("lib/rustlib").join(host).join("lib");
    std::fs::read_dir(lib).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_rt.asan.a"))
    })
}

fn cargo_fuzz_ok() -> bool {
    Command::new(cargo_bin_dir().join("cargo-fuzz"))
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION))
}

fn install_cargo_fuzz() -> Result<()> {
    if cargo_fuzz_ok() {
        return Ok(());
    }
    eprintln!("installing cargo-fuzz {CARGO_FUZZ_VERSION} (takes a few minutes)");
    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]);
    for var in ["RUSTC", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    setup::run_checked(&mut cmd)
}

/// `cargo fuzz <args>` with the chosen compiler, building into target/fuzz/build.
fn cargo_fuzz(toolchain: &Toolchain, sanitizer: Sanitizer, subcommand: &str) -> Command {
    let mut cmd = if toolchain.rustup_nightly {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo"]);
        cmd
    } else {
        let mut cmd = Command::new("cargo");
        // The fuzz build passes `-Z` flags: a stable compiler takes them with this.
        cmd.env("RUSTC_BOOTSTRAP", "1");
        cmd
    };
    // What the outer cargo set for this process must not leak into the fuzz build.
    for var in [
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let work = work_dir();
    cmd.arg("fuzz")
        .arg(subcommand)
        .arg("--target-dir")
        .arg(work.join("build"))
        .args(["--sanitizer", sanitizer_name(sanitizer)])
        .env("PATH", setup::path_with_cargo_bin())
        // The targets never load the eBPF program: an empty object stands in for it.
        .env("PROFILER_EBPF_OBJECT", work.join("placeholder-ebpf.o"))
        // The table_cache target writes its files here.
        .env("TMPDIR", work.join("tmp"))
        .current_dir(fuzz_dir());
    cmd
}

fn sanitizer_name(sanitizer: Sanitizer) -> &'static str {
    match sanitizer {
        Sanitizer::Address => "address",
        Sanitizer::None => "none",
    }
}

/// Reads one line of libFuzzer's output into `stats`.
fn scan_line(line: &str, stats: &mut RunStats) {
    // `Done 123456 runs in 21 second(s)`
    if let Some(rest) = line.strip_prefix("Done ")
        && let Some(runs) = rest.split_whitespace().next()
    {
        stats.executions = runs.parse().ok();
    }
    // `#123456	DONE   cov: ...` (the last status line; also counts runs that ended in a crash)
    if let Some(rest) = line.strip_prefix('#')
        && let Some(runs) = rest.split_whitespace().next()
        && let Ok(runs) = runs.parse::<u64>()
        && stats.executions.is_none_or(|seen| runs > seen)
    {
        stats.executions = Some(runs);
    }
    // `artifact_prefix='…'; Test unit written to fuzz/artifacts/t/crash-…`
    if let Some((_, path)) = line.split_once("Test unit written to ") {
        stats.crash = Some(PathBuf::from(path.trim()));
    }
}

/// libFuzzer's per-input progress lines (`#1234 NEW cov: …`) are noise in a CI log.
fn is_progress_line(line: &str) -> bool {
    line.starts_with('#') && !line.contains("DONE")
}

fn run_target(
    toolchain: &Toolchain,
    sanitizer: Sanitizer,
    target: &str,
    seconds: u64,
) -> Result<RunStats> {
    let work = work_dir();
    let fuzz = fuzz_dir();
    // New inputs go to the first directory (under target/); the seeds and the inputs of past
    // crashes are read only.
    let found = work.join("corpus").join(target);
    std::fs::create_dir_all(&found)?;
    let mut cmd = cargo_fuzz(toolchain, sanitizer, "run");
    cmd.arg(target).arg(&found);
    for dir in [
        fuzz.join("corpus").join(target),
        fuzz.join("regressions").join(target),
    ] {
        if dir.is_dir() {
            cmd.arg(dir);
        }
    }
    cmd.args([
        "--",
        &format!("-max_total_time={seconds}"),
        // An input that takes this long is a hang, reported like a crash.
        "-timeout=10",
        "-print_final_stats=1",
    ]);
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo fuzz for {target}"))?;
    let mut stats = RunStats::default();
    let stderr = child.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        scan_line(&line, &mut stats);
        if !is_progress_line(&line) {
            eprintln!("{line}");
        }
    }
    let status = child.wait()?;
    if !status.success() && stats.crash.is_none() {
        bail!("cargo fuzz run {target} failed ({status}) without reporting a crash: see above");
    }
    Ok(stats)
}

pub fn run(opts: &Options) -> Result<()> {
    let all = targets(&fuzz_dir())?;
    let selected = if opts.targets.is_empty() {
        all.clone()
    } else {
        opts.targets.clone()
    };
    if let Some(unknown) = selected.iter().find(|t| !all.contains(t)) {
        bail!(
            "no fuzz target `{unknown}`: the targets are {}",
            all.join(", ")
        );
    }
    install_cargo_fuzz()?;
    let toolchain = pick_toolchain();
    let sanitizer = match opts.sanitizer {
        Some(Sanitizer::Address) if !toolchain.has_asan => bail!(
            "this compiler ships no AddressSanitizer runtime: use `--sanitizer none`, or rustup's \
             nightly"
        ),
        Some(s) => s,
        None if toolchain.has_asan => Sanitizer::Address,
        None => Sanitizer::None,
    };
    let work = work_dir();
    std::fs::create_dir_all(work.join("tmp"))?;
    let placeholder = work.join("placeholder-ebpf.o");
    // Created once: a new mtime would rebuild the agent.
    if !placeholder.exists() {
        std::fs::write(&placeholder, b"")?;
    }
    eprintln!(
        "fuzzing with {} (sanitizer: {}), {} s per target",
        if toolchain.rustup_nightly {
            "rustup's nightly"
        } else {
            "the current toolchain and RUSTC_BOOTSTRAP=1"
        },
        sanitizer_name(sanitizer),
        opts.seconds
    );
    let mut build = cargo_fuzz(&toolchain, sanitizer, "build");
    setup::run_checked(&mut build).context("building the fuzz targets")?;
    let (prefix, plus) = if toolchain.rustup_nightly {
        ("", "+nightly ")
    } else {
        ("RUSTC_BOOTSTRAP=1 ", "")
    };
    let cargo_fuzz = format!(
        "cd fuzz && PROFILER_EBPF_OBJECT={} {prefix}cargo {plus}fuzz",
        placeholder.display()
    );
    let mut summary = Vec::new();
    let mut crashes = Vec::new();
    for target in &selected {
        let started = Instant::now();
        let stats = run_target(&toolchain, sanitizer, target, opts.seconds)?;
        let seconds = started.elapsed().as_secs();
        let runs = stats.executions.map_or("?".to_string(), |n| n.to_string());
        match stats.crash {
            None => summary.push(format!("{target}: {runs} runs in {seconds} s, no crash")),
            Some(crash) => {
                summary.push(format!("{target}: CRASHED after {runs} runs"));
                let sanitizer = sanitizer_name(sanitizer);
                crashes.push(format!(
                    "{target}: its input is {crash}\n  \
                     reproduce: {cargo_fuzz} run --sanitizer {sanitizer} {target} {crash}\n  \
                     minimize:  {cargo_fuzz} tmin --sanitizer {sanitizer} {target} {crash}\n  \
                     then keep the minimized input in fuzz/regressions/{target}/",
                    crash = crash.display(),
                ));
            }
        }
    }
    eprintln!("fuzzing summary:");
    for line in &summary {
        eprintln!("  {line}");
    }
    if !crashes.is_empty() {
        bail!(
            "{} fuzz target(s) crashed:\n{}",
            crashes.len(),
            crashes.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_file_is_a_bin_of_the_fuzz_crate() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        let targets = targets(&fuzz_dir()).unwrap();
        assert!(targets.len() >= 10, "{targets:?}");
        for target in &targets {
            let bin = format!("name = \"{target}\"\npath = \"fuzz_targets/{target}.rs\"");
            assert!(
                manifest.contains(&bin),
                "fuzz/Cargo.toml has no [[bin]] for {target}"
            );
        }
        assert_eq!(manifest.matches("[[bin]]").count(), targets.len());
    }

    #[test]
    fn reads_runs_and_crash_path_from_libfuzzer_output() {
        let mut stats = RunStats::default();
        for line in [
            "INFO: Seed: 1234",
            "#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#4096\tpulse  cov: 12 ft: 13 corp: 2/2b lim: 4 exec/s: 2048 rss: 31Mb",
            "==123== ERROR: libFuzzer: deadly signal",
            "artifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/crash-ab12",
        ] {
            scan_line(line, &mut stats);
        }
        assert_eq!(
            stats,
            RunStats {
                executions: Some(4096),
                crash: Some(PathBuf::from("/w/fuzz/artifacts/x/crash-ab12")),
            }
        );
        let mut stats = RunStats::default();
        for line in [
            "#51234\tDONE   cov: 12 ft: 13",
            "Done 51234 runs in 21 second(s)",
        ] {
            scan_line(line, &mut stats);
        }
        assert_eq!(stats.executions, Some(51234));
        assert!(stats.crash.is_none());
        assert!(is_progress_line("#12\tNEW    cov: 3"));
        assert!(!is_progress_line("#12\tDONE   cov: 3"));
        assert!(!is_progress_line("INFO: Loaded 1 modules"));
    }
}
