//! Go, as users ship it: real binaries built by Go 1.19 (Debian's `golang-go`) and 1.21–1.23
//! (bookworm-backports), plain and stripped (`-ldflags=-s -w`), PIE and not, amd64 and arm64,
//! named from `.gopclntab` and unwound by its stack-pointer deltas.
//!
//! The references are things we did not write: the binaries' own `.symtab` (what the Go linker
//! says each function is), Go's own `go tool addr2line` (debug/gosym) for lines, and the DWARF
//! inline records read by blazesym for inlined frames. The live tests (root) profile the stripped
//! call tree of `tests/workloads/go/hot` with every toolchain and check it the way the C call tree
//! is checked: `main.hotA;main.leafWork` three times as often as `main.hotB;main.leafWork`.
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use object::{Object, ObjectSymbol, SymbolKind};
use profiler_agent::gopclntab::{BlockFile, GoFrame, Layout, Table};

fn open_table(binary: &Path) -> Table<BlockFile> {
    let data = std::fs::read(binary).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let mut bytes = BlockFile::new(std::fs::File::open(binary).unwrap());
    let layout = Layout::of(&elf, &mut bytes)
        .unwrap_or_else(|| panic!("{}: no Go function table", binary.display()));
    Table::open(bytes, layout).unwrap_or_else(|e| panic!("{}: {e}", binary.display()))
}

/// A function name as both the symbol table and Go's function table can spell it: without the
/// `.abi0` suffix the symbol table gives assembly functions, `·` as `.` (the symbol table's
/// spelling), and array lengths in type names elided (before Go 1.21 the table spells
/// `type..eq.[5]T` as `type..eq.[...]T`).
fn normalized(symbol: &str) -> String {
    let name = symbol
        .strip_suffix(".abi0")
        .unwrap_or(symbol)
        .replace('·', ".");
    let name = name.as_str();
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        match rest.find(']') {
            Some(close) if close > 0 && rest[..close].bytes().all(|b| b.is_ascii_digit()) => {
                out.push_str("...");
                rest = &rest[close..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}

/// The function symbols of an unstripped binary: (address, size, name).
fn function_symbols(binary: &Path) -> Vec<(u64, u64, String)> {
    let data = std::fs::read(binary).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    elf.symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
        .collect()
}

fn has_section(binary: &Path, name: &str) -> bool {
    let data = std::fs::read(binary).unwrap();
    object::File::parse(&*data)
        .unwrap()
        .section_by_name(name)
        .is_some()
}

fn variant(version: &str, goarch: &str, pie: bool, stripped: bool) -> GoBuild {
    GoBuild {
        goarch: goarch.into(),
        pie,
        stripped,
        ..GoBuild::new(version)
    }
}

/// The outermost frame of a lookup (the function the code belongs to).
fn outer(frames: &[GoFrame]) -> &GoFrame {
    frames.last().expect("a lookup gives at least one frame")
}

#[test]
fn every_toolchain_arch_and_link_mode_names_the_symbol_tables_functions_when_stripped() {
    let mut report = Vec::new();
    for (version, _) in go_toolchains() {
        for goarch in ["amd64", "arm64"] {
            for pie in [false, true] {
                let plain = build_go("hot", &variant(&version, goarch, pie, false));
                let stripped = build_go("hot", &variant(&version, goarch, pie, true));
                assert!(!has_section(&stripped, ".symtab"), "{}", stripped.display());
                let symbols = function_symbols(&plain);
                assert!(
                    symbols.len() > 500,
                    "{}: {} symbols",
                    plain.display(),
                    symbols.len()
                );
                let mut table = open_table(&stripped);
                let (mut same, mut missing) = (0, Vec::new());
                for (addr, size, name) in &symbols {
                    let named = table.find(*addr).and_then(|i| table.func(i)).and_then(|f| {
                        let frames = table.frames(&f, *addr + size / 2);
                        (f.entry == *addr).then(|| outer(&frames).function.clone())
                    });
                    if named.as_deref().map(normalized) == Some(normalized(name)) {
                        same += 1;
                    } else {
                        missing.push((name.clone(), named));
                    }
                }
                let what = format!("go{version} {goarch} pie={pie}");
                report.push(format!(
                    "{what}: {} ({} functions): {same} of {} symbols named alike",
                    table.version().name(),
                    table.len(),
                    symbols.len()
                ));
                // Only the linker's few symbols outside Go's table may differ (none seen so far).
                assert!(
                    missing.len() <= 2,
                    "{what}: {} symbols named differently, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                );
                assert!(
                    table.has_inline_trees(),
                    "{what}: the module data (inline trees) was not found"
                );
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}

/// `go tool addr2line` of `version` on `binary` for `addrs`: (function, file:line) per address.
fn go_addr2line(version: &str, binary: &Path, addrs: &[u64]) -> Vec<(String, String)> {
    let (_, go) = go_toolchains()
        .into_iter()
        .find(|(v, _)| v == version)
        .unwrap();
    let mut child = Command::new(go)
        .args(["tool", "addr2line"])
        .arg(binary)
        .env("GOTOOLCHAIN", "local")
        .env("GOENV", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|p| (p[0].to_string(), p.get(1).unwrap_or(&"").to_string()))
        .collect()
}

#[test]
fn names_and_lines_agree_with_go_tool_addr2line() {
    for (version, trimpath) in [("1.19", false), ("1.23", false), ("1.23", true)] {
        for program in ["hot", "httpload"] {
            let plain = build_go(program, &variant(version, "amd64", false, false));
            let stripped = build_go(
                program,
                &GoBuild {
                    trimpath,
                    ..variant(version, "amd64", false, true)
                },
            );
            // Addresses spread over every function, from the plain build's symbol table (the
            // stripped build has the same code at the same addresses).
            let symbols = function_symbols(&plain);
            let addrs: Vec<u64> = symbols
                .iter()
                .enumerate()
                .map(|(i, (a, size, _))| a + (i as u64 * 7919) % size.max(&1))
                .collect();
            let reference = go_addr2line(version, &stripped, &addrs);
            let mut table = open_table(&stripped);
            let mut agree = 0;
            let mut differ = Vec::new();
            for (addr, (function, position)) in addrs.iter().zip(&reference) {
                let frames = table
                    .find(*addr)
                    .and_then(|i| table.func(i))
                    .map(|f| table.frames(&f, *addr))
                    .unwrap_or_default();
                // addr2line names the function the code belongs to and the innermost position
                // (an inlined body's own line).
                let ours = frames.first().map(|inner| {
                    (
                        outer(&frames).function.clone(),
                        format!(
                            "{}:{}",
                            inner.file.as_deref().unwrap_or("?"),
                            inner.line.unwrap_or(0)
                        ),
                    )
                });
                if ours.as_ref() == Some(&(function.clone(), position.clone())) {
                    agree += 1;
                } else {
                    differ.push((*addr, ours, function.clone(), position.clone()));
                }
            }
            eprintln!(
                "go{version} {program} trimpath={trimpath}: {agree} of {} addresses agree with go tool addr2line",
                addrs.len()
            );
            assert!(
                differ.is_empty(),
                "go{version} {program} trimpath={trimpath}: {} addresses differ, e.g. {:x?}",
                differ.len(),
                &differ[..differ.len().min(5)]
            );
        }
    }
}

#[test]
fn inlined_frames_agree_with_the_dwarf_inline_records() {
    use blazesym::symbolize::source::{Elf, Source};
    use blazesym::symbolize::{Input, Symbolized, Symbolizer};
    for version in ["1.19", "1.21", "1.23"] {
        let plain = build_go("inl", &variant(version, "amd64", false, false));
        let stripped = build_go("inl", &variant(version, "amd64", false, true));
        let (start, size, _) = function_symbols(&plain)
            .into_iter()
            .find(|(_, _, n)| n == "main.inlineCaller")
            .expect("main.inlineCaller in the symbol table");
        let addrs: Vec<u64> = (start..start + size).collect();
        let blaze = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .build();
        let src = Source::Elf(Elf::new(&plain));
        let dwarf = blaze
            .symbolize(&src, Input::VirtOffset(&addrs))
            .expect("blazesym reads the plain build's DWARF");
        let mut table = open_table(&stripped);
        let (mut inlined, mut compared) = (0, 0);
        for (addr, sym) in addrs.iter().zip(&dwarf) {
            let Symbolized::Sym(sym) = sym else {
                continue;
            };
            // DWARF: outer function, then the inlined calls outer to inner; ours: inner first.
            let mut expected: Vec<String> = sym
                .inlined
                .iter()
                .rev()
                .map(|i| i.name.to_string())
                .collect();
            expected.push(sym.name.to_string());
            let i = table.find(*addr).unwrap();
            let f = table.func(i).unwrap();
            let ours: Vec<String> = table
                .frames(&f, *addr)
                .into_iter()
                .map(|f| f.function)
                .collect();
            assert_eq!(ours, expected, "go{version} at {addr:#x}");
            compared += 1;
            if ours.len() > 1 {
                inlined += 1;
                assert_eq!(ours, ["main.square", "main.inlineCaller"], "go{version}");
            }
        }
        eprintln!(
            "go{version}: {compared} addresses of main.inlineCaller agree with DWARF, {inlined} inside main.square"
        );
        assert!(
            inlined > 0,
            "go{version}: no address inside the inlined square"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Live: the agent on running Go programs (root).
// ---------------------------------------------------------------------------------------------

fn profile(pid: u32, seconds: &str) -> BTreeMap<Vec<String>, u64> {
    let dir = temp_dir();
    let out = dir.path().join("go.folded");
    let run = run_agent(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        seconds,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_clean_exit(&run);
    read_folded(&out)
}

/// The hot program's call tree: (`main.hotA;main.leafWork`, `main.hotB;main.leafWork`) samples,
/// each under `runtime.goexit;runtime.main;main.main`.
fn go_calltree_split(folded: &BTreeMap<Vec<String>, u64>) -> (u64, u64) {
    let root = ["runtime.goexit", "runtime.main", "main.main"];
    let under = |hot: &str| {
        folded
            .iter()
            .filter(|(stack, _)| {
                stack.len() >= 5
                    && stack[..3] == root
                    && stack[3] == hot
                    && stack[4] == "main.leafWork"
            })
            .map(|(_, c)| c)
            .sum()
    };
    (under("main.hotA"), under("main.hotB"))
}

fn assert_named(what: &str, folded: &BTreeMap<Vec<String>, u64>) {
    let unknown: u64 = folded
        .iter()
        .filter(|(stack, _)| stack.iter().any(|f| f.starts_with("[unknown]")))
        .map(|(_, c)| c)
        .sum();
    let total = total(folded);
    eprintln!("{what}: {unknown} of {total} samples with an unknown frame");
    for (stack, count) in folded {
        if stack.iter().any(|f| f.starts_with("[unknown]")) {
            eprintln!("  {count} {}", stack.join(";"));
        }
    }
    assert!(
        unknown * 100 <= total,
        "{what}: {unknown} of {total} samples have unknown frames: {folded:?}"
    );
}

#[test]
fn stripped_go_call_trees_keep_the_callers_of_frameless_leaves_with_every_toolchain() {
    if !require_root() {
        return;
    }
    for (version, _) in go_toolchains() {
        for (pie, stripped) in [(false, true), (true, true), (false, false)] {
            if !stripped && version != "1.19" {
                continue;
            }
            let binary = build_go("hot", &variant(&version, "amd64", pie, stripped));
            let w = Workload::start(&binary, &[]);
            let folded = profile(w.pid(), "4s");
            let what = format!("go{version} pie={pie} stripped={stripped}");
            assert_named(&what, &folded);
            assert_calltree_shares(&what, go_calltree_split(&folded), 100);
        }
    }
}

#[test]
fn goroutine_stacks_of_an_http_server_end_at_goexit_and_none_is_cut_short() {
    if !require_root() {
        return;
    }
    let binary = build_go("httpload", &variant("1.23", "amd64", false, true));
    let w = Workload::start(&binary, &[]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dir = temp_dir();
    let out = dir.path().join("http.folded");
    let run = run_agent(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "4s",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_clean_exit(&run);
    let folded = read_folded(&out);
    assert_named("httpload", &folded);
    // Every user stack starts at a goroutine's or a thread's outermost frame; kernel-only stacks
    // (none expected here) and the rare stack caught on a signal frame aside.
    const ROOTS: &[&str] = &[
        "runtime.goexit",
        "runtime.mstart",
        "runtime.rt0_go",
        "runtime.systemstack",
        "runtime.mcall",
        "runtime.morestack",
        "runtime.sigtramp",
    ];
    let total = total(&folded);
    let mut by_root: BTreeMap<&str, u64> = BTreeMap::new();
    for (stack, count) in &folded {
        *by_root.entry(stack[0].as_str()).or_default() += count;
    }
    eprintln!("httpload: {total} samples by outermost frame: {by_root:?}");
    let rooted: u64 = ROOTS.iter().filter_map(|r| by_root.get(r)).sum();
    assert!(
        rooted * 100 >= total * 98,
        "{rooted} of {total} stacks start at a Go stack's end: {by_root:?}"
    );
    let goexit = by_root.get("runtime.goexit").copied().unwrap_or(0);
    assert!(
        goexit * 2 >= total,
        "most samples are goroutines: {by_root:?}"
    );
    // The handlers' work is there, under net/http's server loop.
    let handler = count_with(&folded, &["net/http.(*conn).serve"]);
    assert!(handler > 0, "no samples under net/http.(*conn).serve");
}

#[test]
fn cgo_programs_show_their_c_frames_under_asmcgocall_and_their_go_frames_by_name() {
    if !require_root() {
        return;
    }
    let build = GoBuild {
        cgo: true,
        ..GoBuild::new("1.23")
    };
    let binary = build_go("cgo", &build);
    let w = Workload::start(&binary, &[]);
    let folded = profile(w.pid(), "3s");
    let total = total(&folded);
    // The C code (external linking: gcc's objects, named from .symtab through blazesym, unwound
    // through their .eh_frame) runs on the system stack, which ends at runtime.asmcgocall.
    let c = count_with(&folded, &["runtime.asmcgocall"]);
    let cwork = folded
        .iter()
        .filter(|(s, _)| s[0] == "runtime.asmcgocall" && s.iter().any(|f| f == "cwork"))
        .map(|(_, c)| c)
        .sum::<u64>();
    let go = count_with(
        &folded,
        &["runtime.goexit", "runtime.main", "main.main", "main.goWork"],
    );
    eprintln!(
        "cgo: {total} samples, {go} in main.goWork, {c} on the system stack, {cwork} of them in cwork"
    );
    assert!(go * 5 >= total, "too few Go samples: {folded:?}");
    assert!(
        cwork * 5 >= total,
        "too few samples in the C function: {folded:?}"
    );
    assert_named("cgo", &folded);
}
