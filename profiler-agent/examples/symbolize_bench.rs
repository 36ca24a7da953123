//! Symbolization throughput of the agent's [`Symbolizer`] against `addr2line -f -i -C` on the
//! same addresses of one binary (`cargo xtask bench`, P5).
//!
//! ```sh
//! cargo build --release -p profiler-agent --example symbolize_bench
//! target/release/examples/symbolize_bench BINARY [COUNT]
//! ```
//!
//! Picks `2 × COUNT` addresses inside the binary's functions (from its symbol table), spread over
//! all of them, deterministically. The binary is mapped executable into this process, so the
//! agent's own [`ProcessTable`] opens it exactly as it opens a profiled process's files.
//!
//! - `addr2line`: one `addr2line -f -i -C -a -e BINARY` process reads the second `COUNT`
//!   addresses on stdin (first run discarded, so the file is in the page cache).
//! - `cold`: a new [`Symbolizer`] symbolizes those addresses; blazesym parses the file on the way.
//! - `first touch`: a new [`Symbolizer`] first symbolizes the *other* `COUNT` addresses (the
//!   file's symbol table and DWARF index are then parsed), then the timed `COUNT`, none of which
//!   are in the agent's per-address result cache. blazesym parses each compilation unit's lines
//!   and functions when an address first falls in it, so this includes parsing the units only the
//!   timed addresses reach: a long-running agent meeting code it has not seen yet.
//! - `warm`: after that, the per-address results are dropped ([`Symbolizer::clear_results`]) and
//!   the timed addresses are symbolized again: everything they need is parsed, nothing is a result
//!   cache hit. Lookup throughput in a file the agent knows: the target's "warm".
//! - `cached`: the same addresses once more: every one a hit in the per-address result cache.
//!
//! Every measurement is repeated `RUNS` times and the median is reported. The output is one JSON
//! object on stdout, with an agreement check that both did the same work: the share of addresses
//! where the outermost function name and the number of (inlined) frames match what addr2line
//! printed (`SYMBOLIZE_BENCH_SHOW=N` prints the first N disagreements to stderr).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object::{Object, ObjectSegment, ObjectSymbol, SegmentFlags, SymbolKind};
use profiler_agent::process::{ObjectFile, ProcessTable};
use profiler_agent::symbolize::{Frames, Symbolizer};
use profiler_agent::types::{FileOffset, Pid};

const RUNS: usize = 3;
/// `PF_X` in an ELF program header.
const PF_X: u32 = 1;

/// One address, as addr2line wants it (a virtual address of the ELF file) and as the agent
/// symbolizes it (an offset into the file).
#[derive(Clone, Copy)]
struct Address {
    virt: u64,
    offset: FileOffset,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let binary = PathBuf::from(args.next().expect("usage: symbolize_bench BINARY [COUNT]"));
    let count: usize = args
        .next()
        .map_or(5_000, |c| c.parse().expect("COUNT is a number"));
    let binary = binary.canonicalize().expect("the binary exists");
    let data = std::fs::read(&binary).expect("the binary is readable");
    let (addresses, functions) = pick_addresses(&data, 2 * count);
    assert!(
        addresses.len() >= 2,
        "{} has no function symbols in executable segments",
        binary.display()
    );
    let (warmup, timed) = addresses.split_at(addresses.len() / 2);

    let object = map_into_self(&binary);
    let offsets = |set: &[Address]| set.iter().map(|a| a.offset).collect::<Vec<_>>();
    let (warmup_offsets, timed_offsets) = (offsets(warmup), offsets(timed));

    let mut addr2line_runs = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..=RUNS {
        let (elapsed, output) = addr2line(&binary, timed);
        // The first run reads the file into the page cache and is not counted.
        if run > 0 {
            addr2line_runs.push(elapsed);
        }
        theirs = output;
    }
    let (mut cold, mut first_touch, mut warm, mut cached) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut ours = Vec::new();
    for _ in 0..RUNS {
        let mut symbolizer = Symbolizer::new();
        let started = Instant::now();
        std::hint::black_box(symbolizer.user(&object, &timed_offsets));
        cold.push(started.elapsed());

        let mut symbolizer = Symbolizer::new();
        std::hint::black_box(symbolizer.user(&object, &warmup_offsets));
        let started = Instant::now();
        std::hint::black_box(symbolizer.user(&object, &timed_offsets));
        first_touch.push(started.elapsed());
        symbolizer.clear_results();
        let started = Instant::now();
        ours = symbolizer.user(&object, &timed_offsets);
        warm.push(started.elapsed());
        let started = Instant::now();
        std::hint::black_box(symbolizer.user(&object, &timed_offsets));
        cached.push(started.elapsed());
    }
    let (names, depths) = agreement(&ours, &theirs);
    let result = serde_json::json!({
        "binary": binary.display().to_string(),
        "binary_bytes": data.len(),
        "functions": functions,
        "addresses": timed.len(),
        "runs": RUNS,
        "addr2line_s": median(&addr2line_runs),
        "addr2line_runs_s": secs(&addr2line_runs),
        "cold_s": median(&cold),
        "first_touch_s": median(&first_touch),
        "warm_s": median(&warm),
        "warm_runs_s": secs(&warm),
        "cached_s": median(&cached),
        "name_agreement": names,
        "depth_agreement": depths,
    });
    println!("{result}");
}

/// `count` addresses inside function symbols that lie in executable segments, spread evenly over
/// the functions (several per function when there are fewer functions than addresses), each at
/// a pseudo-random offset inside its function. Returns them and the number of functions.
fn pick_addresses(data: &[u8], count: usize) -> (Vec<Address>, usize) {
    let file = object::File::parse(data).expect("an ELF file");
    let exec: Vec<(u64, u64, u64)> = file
        .segments()
        .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
        .map(|s| (s.address(), s.address() + s.size(), s.file_range().0))
        .collect();
    let mut functions: Vec<(u64, u64)> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .map(|s| (s.address(), s.size()))
        .filter(|(a, _)| exec.iter().any(|(lo, hi, _)| (lo..hi).contains(&a)))
        .collect();
    functions.sort_unstable();
    functions.dedup_by_key(|f| f.0);
    if functions.is_empty() {
        return (Vec::new(), 0);
    }
    // A fixed-seed generator: the same addresses on every run and every machine with this file.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let addresses = (0..count)
        .map(|i| {
            let (start, size) = functions[i * functions.len() / count % functions.len()];
            let virt = start + next() % size;
            let (lo, _, file_start) = exec
                .iter()
                .find(|(lo, hi, _)| (lo..hi).contains(&&virt))
                .copied()
                .unwrap_or((start, 0, start));
            Address {
                virt,
                offset: FileOffset(virt - lo + file_start),
            }
        })
        .collect();
    (addresses, functions.len())
}

/// Maps the whole file executable into this process and returns the agent's handle on it, found
/// the way the agent finds a profiled process's files: through `/proc/self/maps`.
fn map_into_self(binary: &Path) -> Arc<ObjectFile> {
    let file = std::fs::File::open(binary).unwrap();
    // SAFETY: the mapping is only read (by the kernel, for /proc/self/maps); nobody writes the file
    // while the benchmark runs.
    let map = unsafe { memmap2::MmapOptions::new().map_exec(&file) }.expect("mmap PROT_EXEC");
    std::mem::forget(map);
    let pid = Pid(std::process::id());
    let mut table = ProcessTable::default();
    table.refresh(pid).expect("/proc/self/maps is readable");
    table
        .get(pid)
        .into_iter()
        .flat_map(|p| &p.mappings)
        .filter_map(|m| m.object.clone())
        .find(|o| o.path == binary)
        .unwrap_or_else(|| panic!("{} is not in /proc/self/maps", binary.display()))
}

/// Runs addr2line once over the addresses; returns its wall time and, per address, the frames
/// it printed (innermost first).
fn addr2line(binary: &Path, addresses: &[Address]) -> (Duration, Vec<Vec<String>>) {
    let input: String = addresses
        .iter()
        .map(|a| format!("{:#x}\n", a.virt))
        .collect();
    let started = Instant::now();
    let mut child = Command::new("addr2line")
        .args(["-f", "-i", "-C", "-a", "-e"])
        .arg(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("addr2line runs (binutils)");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "addr2line failed");
    (
        elapsed,
        parse_addr2line(&String::from_utf8_lossy(&out.stdout)),
    )
}

/// `-a` prints each address on its own line (`0x…`), then function / `file:line` pairs.
fn parse_addr2line(text: &str) -> Vec<Vec<String>> {
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("0x") && !line.contains(' ') {
            groups.push(Vec::new());
            continue;
        }
        if let Some(group) = groups.last_mut() {
            group.push(line.to_string());
            lines.next(); // file:line
        }
    }
    groups
}

/// The bare function name: generic arguments removed, then the last path segment. addr2line
/// names a function by its demangled linkage name (`tonic::request::Request<T>::into_http`), blazesym by
/// its DWARF name (`into_http<tonic::body::Body>`); both reduce to `into_http`.
fn base_name(name: &str) -> String {
    let mut depth = 0usize;
    let mut bare = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let bare = match bare.rsplit_once("::h") {
        Some((base, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            base.to_string()
        }
        _ => bare,
    };
    bare.rsplit("::")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Shares (0–1) of addresses where the outermost function agrees by [`base_name`], and where the
/// number of frames (the function plus what was inlined into it) agrees. The outermost frame is
/// compared because addr2line prints the first line of an inline chain under the linkage name of
/// the outer function, not under the inlined function's own name.
fn agreement(ours: &[Frames], theirs: &[Vec<String>]) -> (f64, f64) {
    let (mut names, mut depths) = (0usize, 0usize);
    // SYMBOLIZE_BENCH_SHOW=N prints the first N disagreements to stderr.
    let mut show: usize = std::env::var("SYMBOLIZE_BENCH_SHOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for (o, t) in ours.iter().zip(theirs) {
        let t_known: Vec<&String> = t.iter().filter(|s| *s != "??").collect();
        let o_outer = o.last().map(|f| base_name(&f.function));
        let t_outer = t_known.last().map(|s| base_name(s));
        if o_outer == t_outer {
            names += 1;
        } else if show > 0 {
            show -= 1;
            let o_names: Vec<&str> = o.iter().map(|f| f.function.as_ref()).collect();
            eprintln!("differs: ours {o_names:?}, addr2line {t_known:?}");
        }
        if o.len() == t_known.len() {
            depths += 1;
        }
    }
    let n = ours.len().max(1) as f64;
    (names as f64 / n, depths as f64 / n)
}

fn secs(runs: &[Duration]) -> Vec<f64> {
    runs.iter().map(Duration::as_secs_f64).collect()
}

fn median(runs: &[Duration]) -> f64 {
    let mut s = secs(runs);
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}
