//! Embeds the eBPF object that `cargo xtask build-ebpf` produced. Building it here would need a
//! second toolchain inside a build script; instead a missing object is one clear error.
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=PROFILER_EBPF_OBJECT");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = std::env::var_os("PROFILER_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpf/profiler-ebpf.o"));
    println!("cargo::rerun-if-changed={}", object.display());
    if !object.exists() {
        println!(
            "cargo::error=eBPF object {} not found: run `cargo xtask build-ebpf` first (or set PROFILER_EBPF_OBJECT)",
            object.display()
        );
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("profiler-ebpf.o");
    std::fs::copy(&object, &out).expect("copy the eBPF object into OUT_DIR");
}
