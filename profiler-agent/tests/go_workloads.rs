//! The Go workloads (`tests/workloads/go/`) build with every toolchain the suite installs, and
//! hold what a Go symbolizer reads: a pclntab in every build, for both architectures, PIE or
//! not, and no `.symtab` or DWARF once stripped (`-ldflags=-s -w`, as container images ship Go).
//!
//! Where the pclntab lives, measured with Debian's Go 1.19.8, 1.21.13, 1.22.12 and 1.23.5 (Go's
//! own linker: CGO_ENABLED=0 links internally, PIE included):
//! - not PIE: `.gopclntab`, read-only (`A`), in an ET_EXEC at 0x400000 (amd64) / 0x10000 (arm64);
//! - `-buildmode=pie`: `.data.rel.ro.gopclntab`, writable (`WA`), in an ET_DYN that still asks
//!   for an interpreter (ld-linux) and whose first PT_LOAD is at 0x400000 on amd64 and 0x10000
//!   on arm64, not 0: the load bias is the mapping's start minus that. The header's textStart
//!   holds the link-time .text address in the file and is fixed up by an R_*_RELATIVE
//!   relocation at run time.
//!
//! Stripping changes neither the section nor its size. The magic is 0xfffffff0 for Go 1.18-1.19
//! and 0xfffffff1 from Go 1.20 on; the header is magic, two zero bytes, the instruction size
//! quantum (1 on amd64, 4 on arm64), the pointer size, then nfunc, nfiles and textStart.
mod common;

use common::*;
use object::{Object, ObjectSection};

/// The pclntab header's first word: Go 1.18-1.19, and Go 1.20 on (runtime/symtab.go).
const PCLNTAB_MAGIC_118: u32 = 0xffff_fff0;
const PCLNTAB_MAGIC_120: u32 = 0xffff_fff1;

fn expected_magic(version: &str) -> u32 {
    if version == "1.19" {
        PCLNTAB_MAGIC_118
    } else {
        PCLNTAB_MAGIC_120
    }
}

fn section_names(file: &object::File) -> Vec<String> {
    file.sections()
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect()
}

#[test]
fn hot_has_a_pclntab_in_every_build_and_no_symtab_once_stripped() {
    let mut table = vec![format!(
        "{:<5} {:<6} {:<4} {:<8} {:<24} {:<12} {:>9}",
        "go", "arch", "pie", "stripped", "pclntab section", "first bytes", "size"
    )];
    for (version, _) in go_toolchains() {
        for goarch in ["amd64", "arm64"] {
            for pie in [false, true] {
                for stripped in [false, true] {
                    let build = GoBuild {
                        goarch: goarch.into(),
                        pie,
                        stripped,
                        ..GoBuild::new(&version)
                    };
                    let bin = build_go("hot", &build);
                    let what = format!("{} ({build:?})", bin.display());
                    let data = std::fs::read(&bin).unwrap();
                    let file = object::File::parse(&*data).unwrap();
                    let arch = match goarch {
                        "amd64" => object::Architecture::X86_64,
                        _ => object::Architecture::Aarch64,
                    };
                    assert_eq!(file.architecture(), arch, "{what}");
                    let names = section_names(&file);
                    let section = file
                        .sections()
                        .find(|s| s.name().is_ok_and(|n| n.ends_with(".gopclntab")))
                        .unwrap_or_else(|| panic!("{what}: no *.gopclntab in {names:?}"));
                    let expected_name = if pie {
                        ".data.rel.ro.gopclntab"
                    } else {
                        ".gopclntab"
                    };
                    assert_eq!(section.name().unwrap(), expected_name, "{what}");
                    assert_eq!(
                        file.kind(),
                        if pie {
                            object::ObjectKind::Dynamic
                        } else {
                            object::ObjectKind::Executable
                        },
                        "{what}"
                    );
                    let bytes = section.data().unwrap();
                    let magic = u32::from_le_bytes(bytes[..4].try_into().unwrap());
                    assert_eq!(
                        magic,
                        expected_magic(&version),
                        "{what}: pclntab magic {magic:#x}"
                    );
                    let quantum = if goarch == "amd64" { 1 } else { 4 };
                    assert_eq!(bytes[4..8], [0, 0, quantum, 8], "{what}: pclntab header");
                    // Function entries are offsets from textStart: the link-time .text address.
                    let text_start = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
                    let text = file.section_by_name(".text").unwrap().address();
                    assert_eq!(text_start, text, "{what}: pclntab textStart");
                    let has_symtab = names.iter().any(|n| n == ".symtab");
                    let has_dwarf = names
                        .iter()
                        .any(|n| n.starts_with(".debug_") || n.starts_with(".zdebug_"));
                    assert_eq!(has_symtab, !stripped, "{what}: sections {names:?}");
                    assert_eq!(has_dwarf, !stripped, "{what}: sections {names:?}");
                    table.push(format!(
                        "{version:<5} {goarch:<6} {:<4} {:<8} {:<24} {:<12} {:>9}",
                        if pie { "yes" } else { "no" },
                        if stripped { "yes" } else { "no" },
                        section.name().unwrap(),
                        bytes[..4]
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect::<Vec<_>>()
                            .join(" "),
                        section.size()
                    ));
                }
            }
        }
    }
    eprintln!("{}", table.join("\n"));
}

#[test]
fn every_workload_builds_with_every_toolchain_and_inl_keeps_square_inlined() {
    for (version, _) in go_toolchains() {
        for program in ["hot", "inl", "httpload", "cgo"] {
            let build = GoBuild {
                cgo: program == "cgo",
                ..GoBuild::new(&version)
            };
            let bin = build_go(program, &build);
            let data = std::fs::read(&bin).unwrap();
            let file = object::File::parse(&*data).unwrap();
            let symbols: Vec<String> = file
                .symbols()
                .filter_map(|s| object::ObjectSymbol::name(&s).ok().map(str::to_string))
                .collect();
            let has = |name: &str| symbols.iter().any(|s| s == name);
            let expected: &[&str] = match program {
                "hot" => &["main.leafWork", "main.hotA", "main.hotB"],
                // The hot loop's own function; square exists only inlined (an inline tree entry).
                "inl" => &["main.inlineCaller"],
                "httpload" => &["main.handle", "main.client"],
                _ => &["main.callC", "main.goWork", "cwork"],
            };
            for name in expected {
                assert!(has(name), "Go {version} {program}: no symbol {name}");
            }
            if program == "inl" {
                assert!(
                    !has("main.square"),
                    "Go {version}: main.square was not inlined into main.inlineCaller"
                );
            }
        }
    }
}
