//! Go symbolization: the agent's `.gopclntab` reader on a stripped binary against blazesym on the
//! unstripped build of the same program (its `.symtab` alone, and its DWARF with lines and
//! inlined frames), on the same addresses.
//!
//! ```sh
//! cargo build --release -p profiler-agent --example go_symbolize_bench
//! target/release/examples/go_symbolize_bench UNSTRIPPED STRIPPED [COUNT]
//! ```
//!
//! Picks `COUNT` addresses spread over every function of UNSTRIPPED's symbol table
//! (deterministically). Each reader runs in a child process of its own, so its peak memory
//! (`VmHWM`, minus the child's own before it starts) is its own:
//!
//! - `pclntab`: [`Table`] over a [`BlockFile`] of STRIPPED, names + files + lines + inlined
//!   frames; *cold* includes opening the file and finding the table and module data.
//! - `symtab`: blazesym, symbols only (no DWARF), on UNSTRIPPED: names, no lines.
//! - `dwarf`: blazesym with code info and inlined functions on UNSTRIPPED (what the agent would
//!   do without a Go reader, and only possible when the binary is not stripped).
//!
//! *warm* is the same addresses again on the same instance (blazesym's parsed data and our block
//! cache warm). Output: one JSON object per reader on stdout, and agreement of the outermost
//! function name with the symbol table's (`.abi0` suffixes and `·` spelled as the table does).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use object::{Object, ObjectSymbol, SymbolKind};
use profiler_agent::gopclntab::{BlockFile, Layout, Table};

fn symbols(binary: &Path) -> Vec<(u64, u64, String)> {
    let data = std::fs::read(binary).expect("the unstripped binary is readable");
    let elf = object::File::parse(&*data).expect("an ELF file");
    let mut out: Vec<(u64, u64, String)> = elf
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
        .collect();
    out.sort();
    out
}

fn pick(symbols: &[(u64, u64, String)], count: usize) -> Vec<(u64, String)> {
    (0..count)
        .map(|i| {
            let (addr, size, name) = &symbols[i * symbols.len() / count.max(1) % symbols.len()];
            (addr + (i as u64 * 7919) % size, name.clone())
        })
        .collect()
}

fn normalized(name: &str) -> String {
    name.strip_suffix(".abi0").unwrap_or(name).replace('·', ".")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs one reader in this process: (cold s, warm s, names, frames) for the addresses.
fn run(
    mode: &str,
    unstripped: &Path,
    stripped: &Path,
    addrs: &[u64],
) -> (f64, f64, Vec<String>, usize) {
    match mode {
        "pclntab" => {
            let pass = |table: &mut Table<BlockFile>| {
                let mut names = Vec::with_capacity(addrs.len());
                let mut frames = 0;
                for &a in addrs {
                    let f = table.find(a).and_then(|i| table.func(i));
                    let fr = f.map(|f| table.frames(&f, a)).unwrap_or_default();
                    frames += fr.len();
                    names.push(fr.last().map(|f| f.function.clone()).unwrap_or_default());
                }
                (names, frames)
            };
            let start = Instant::now();
            let file = std::fs::File::open(stripped).expect("the stripped binary");
            let elf_data = object::read::ReadCache::new(&file);
            let elf = object::File::parse(&elf_data).expect("an ELF file");
            let mut bytes = BlockFile::new(file.try_clone().unwrap());
            let layout = Layout::of(&elf, &mut bytes).expect("a Go function table");
            let mut table = Table::open(bytes, layout).expect("a readable table");
            let (names, frames) = pass(&mut table);
            let cold = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let _ = pass(&mut table);
            (cold, start.elapsed().as_secs_f64(), names, frames)
        }
        "symtab" | "dwarf" => {
            let dwarf = mode == "dwarf";
            let blaze = Symbolizer::builder()
                .enable_code_info(dwarf)
                .enable_inlined_fns(dwarf)
                .build();
            let mut elf = Elf::new(unstripped);
            elf.debug_syms = dwarf;
            let src = Source::Elf(elf);
            let pass = || {
                let syms = blaze
                    .symbolize(&src, Input::VirtOffset(addrs))
                    .expect("blazesym reads the binary");
                let mut frames = 0;
                let names = syms
                    .iter()
                    .map(|s| match s {
                        Symbolized::Sym(sym) => {
                            frames += 1 + sym.inlined.len();
                            sym.name.to_string()
                        }
                        _ => String::new(),
                    })
                    .collect();
                (names, frames)
            };
            let start = Instant::now();
            let (names, frames) = pass();
            let cold = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let _ = pass();
            (cold, start.elapsed().as_secs_f64(), names, frames)
        }
        other => panic!("unknown mode {other}"),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: go_symbolize_bench UNSTRIPPED STRIPPED [COUNT]";
    let unstripped = PathBuf::from(args.next().expect(usage));
    let stripped = PathBuf::from(args.next().expect(usage));
    let count: usize = args
        .next()
        .map_or(20_000, |c| c.parse().expect("COUNT is a number"));

    if let Ok(mode) = std::env::var("GO_SYMBOLIZE_BENCH_MODE") {
        // The addresses come from the parent, so that reading the symbol table does not count
        // here.
        let list = std::fs::read_to_string(std::env::var("GO_SYMBOLIZE_BENCH_ADDRS").unwrap())
            .expect("the address list");
        let picked: Vec<(u64, String)> = list
            .lines()
            .filter_map(|l| {
                let (a, n) = l.split_once(' ')?;
                Some((a.parse().ok()?, n.to_string()))
            })
            .collect();
        let addrs: Vec<u64> = picked.iter().map(|(a, _)| *a).collect();
        let before = status_kib("VmHWM:");
        let (cold, warm, names, frames) = run(&mode, &unstripped, &stripped, &addrs);
        let hwm = status_kib("VmHWM:");
        let agree = names
            .iter()
            .zip(&picked)
            .filter(|(ours, (_, sym))| normalized(ours) == normalized(sym))
            .count();
        println!(
            "{{\"reader\":\"{mode}\",\"addresses\":{},\"cold_s\":{cold:.4},\"warm_s\":{warm:.4},\
             \"warm_per_s\":{:.0},\"frames\":{frames},\"name_agreement\":{:.4},\"peak_mib\":{:.1}}}",
            addrs.len(),
            addrs.len() as f64 / warm.max(1e-9),
            agree as f64 / addrs.len().max(1) as f64,
            hwm.saturating_sub(before) as f64 / 1024.0
        );
        return;
    }
    let symbols = symbols(&unstripped);
    let picked = pick(&symbols, count);
    let list_file = std::env::temp_dir().join(format!("go-symbolize-bench-{}", std::process::id()));
    let list: String = picked.iter().map(|(a, n)| format!("{a} {n}\n")).collect();
    std::fs::write(&list_file, list).expect("writing the address list");
    eprintln!(
        "{}: {} MiB, {} functions; {}: {} MiB; {} addresses",
        unstripped.display(),
        std::fs::metadata(&unstripped).map_or(0, |m| m.len() >> 20),
        symbols.len(),
        stripped.display(),
        std::fs::metadata(&stripped).map_or(0, |m| m.len() >> 20),
        picked.len()
    );
    let me = std::env::current_exe().expect("this program's path");
    for mode in ["pclntab", "symtab", "dwarf"] {
        let status = Command::new(&me)
            .args([&unstripped, &stripped])
            .arg(count.to_string())
            .env("GO_SYMBOLIZE_BENCH_MODE", mode)
            .env("GO_SYMBOLIZE_BENCH_ADDRS", &list_file)
            .status()
            .expect("running a reader");
        assert!(status.success(), "{mode}: {status}");
    }
    let _ = std::fs::remove_file(&list_file);
}
