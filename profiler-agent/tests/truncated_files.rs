//! Files other processes control: a process may truncate a library it maps at any moment, and
//! the agent (root, node-wide) must outlive it. Reading through a mapping past the new end of
//! file raises SIGBUS, so the agent reads headers, notes and CFI with `pread`, and survives the
//! mappings blazesym makes (`profiler_agent::sigbus`).
//!
//! To make the worst moment certain rather than likely, the agent runs with an `LD_PRELOAD` shim
//! that truncates the workload's library the instant the agent maps it.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Wraps `mmap`/`mmap64`: after mapping a file whose path is `$KALYPSO_TRUNCATE_ON_MMAP`,
/// truncates it to zero bytes, as its owner could.
const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void truncate_if_target(int fd) {
    const char *target = getenv("KALYPSO_TRUNCATE_ON_MMAP");
    char link[64], path[PATH_MAX];
    if (!target || fd < 0) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return;
    path[n] = 0;
    if (strcmp(path, target) == 0 && truncate(target, 0) == 0) {
        static const char said[] = "shim: truncated the file just mapped\n";
        (void)!write(2, said, sizeof said - 1);
    }
}

void *mmap(void *a, size_t l, int p, int f, int fd, off_t o) {
    static void *(*real)(void *, size_t, int, int, int, off_t);
    if (!real) real = dlsym(RTLD_NEXT, "mmap");
    void *r = real(a, l, p, f, fd, o);
    if (r != MAP_FAILED) truncate_if_target(fd);
    return r;
}

void *mmap64(void *a, size_t l, int p, int f, int fd, off64_t o) {
    static void *(*real)(void *, size_t, int, int, int, off64_t);
    if (!real) real = dlsym(RTLD_NEXT, "mmap64");
    void *r = real(a, l, p, f, fd, o);
    if (r != MAP_FAILED) truncate_if_target(fd);
    return r;
}
"#;

/// A library with a hot function, big enough that its symbol table and CFI span pages.
const LIBRARY: &str = r#"
volatile unsigned long counter;
#define F(n) void filler_##n(void) { for (int i = 0; i < n; i++) counter += i * n; }
#define F10(n) F(n##0) F(n##1) F(n##2) F(n##3) F(n##4) F(n##5) F(n##6) F(n##7) F(n##8) F(n##9)
F10(1) F10(2) F10(3) F10(4) F10(5) F10(6) F10(7) F10(8) F10(9)
void spin_in_library(void) { for (;;) counter++; }
"#;

/// dlopen()s its argument and spins in it.
const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    void (*spin)(void) = (void (*)(void))dlsym(lib, "spin_in_library");
    puts("ready");
    fflush(stdout);
    spin();
    return 0;
}
"#;

fn gcc(source: &str, out: &Path, args: &[&str]) {
    let src = out.with_extension("c");
    std::fs::write(&src, source).unwrap();
    let status = Command::new("gcc")
        .args(args)
        .arg("-o")
        .arg(out)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("gcc runs");
    assert!(status.success(), "building {}", out.display());
}

struct Built {
    _dir: tempfile::TempDir,
    shim: PathBuf,
    library: PathBuf,
    program: PathBuf,
}

fn build() -> Built {
    let dir = temp_dir();
    let shim = dir.path().join("truncate_on_mmap.so");
    gcc(SHIM, &shim, &["-O2", "-shared", "-fPIC"]);
    let library = dir.path().join("libvictim.so");
    gcc(
        LIBRARY,
        &library,
        &["-O0", "-g", "-fno-omit-frame-pointer", "-shared", "-fPIC"],
    );
    let program = dir.path().join("dlopen_spin");
    gcc(PROGRAM, &program, &["-O0", "-g", "-fno-omit-frame-pointer"]);
    Built {
        _dir: dir,
        shim,
        library,
        program,
    }
}

#[test]
fn a_library_truncated_the_moment_the_agent_maps_it_does_not_kill_the_agent() {
    if !require_root() {
        return;
    }
    let built = build();
    let w = Workload::start(&built.program, &[built.library.to_str().unwrap()]);
    let out_dir = temp_dir();
    let folded = out_dir.path().join("cpu.folded");
    let cache = out_dir.path().join("unwind");
    let out = Command::new(agent_binary())
        .args(["--pid", &w.pid().to_string(), "--duration", "2s"])
        .args(["--unwind", "dwarf", "--quiet"])
        .arg("--unwind-cache-dir")
        .arg(&cache)
        .arg("--output")
        .arg(&folded)
        .env("LD_PRELOAD", &built.shim)
        .env("KALYPSO_TRUNCATE_ON_MMAP", &built.library)
        .output()
        .unwrap();
    let stderr = stderr_of(&out);
    eprintln!("agent: {}\n{stderr}", out.status);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        None,
        "the agent was killed:\n{stderr}"
    );
    // The shim did its part: the agent mapped the library, and it was cut under the mapping.
    assert!(stderr.contains("shim: truncated"), "{stderr}");
    assert_eq!(std::fs::metadata(&built.library).unwrap().len(), 0);
    // The target dies of the truncation itself (its code is gone); the agent writes what it
    // has, with the library's frames unresolved.
    assert_clean_exit(&out);
    assert!(total(&read_folded(&folded)) > 0, "{stderr}");
}
