//! Tests of table building: hand-written CFI assembled and linked with binutils (`tests/cfi/`),
//! the system libc cross-checked against `readelf`, the test binary itself, and malformed input.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSymbol};

use super::*;

mod real_objects;

/// Architectures of the hand-written cases.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    X86_64,
    I386,
    Aarch64,
}

impl Target {
    fn tools(
        self,
    ) -> (
        &'static str,
        &'static [&'static str],
        &'static str,
        &'static [&'static str],
    ) {
        match self {
            Target::X86_64 => ("as", &["--64"], "ld", &["-m", "elf_x86_64"]),
            Target::I386 => ("as", &["--32"], "ld", &["-m", "elf_i386"]),
            Target::Aarch64 => ("aarch64-linux-gnu-as", &[], "aarch64-linux-gnu-ld", &[]),
        }
    }
}

fn installed(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

fn cfi_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/cfi/{name}.s"))
}

/// How to assemble and link a case.
#[derive(Clone, Copy)]
pub(crate) struct Build<'a> {
    pub target: Target,
    /// Assembled first, as if at the top of the case (GNU as concatenates its inputs).
    pub prefix: &'a str,
    pub as_args: &'a [&'a str],
    pub ld_args: &'a [&'a str],
    /// `Some(with --eh-frame-hdr)` to link, `None` for the object file.
    pub link: Option<bool>,
}

impl Build<'_> {
    pub const X86_64: Build<'static> = Build {
        target: Target::X86_64,
        prefix: "",
        as_args: &[],
        ld_args: &[],
        link: Some(true),
    };
}

/// Assembles (and links) `tests/cfi/<name>.s`; `None`, saying so, when binutils for the target
/// are not installed.
pub(crate) fn assemble(name: &str, build: Build<'_>) -> Option<Vec<u8>> {
    let (assembler, as_target, linker, ld_target) = build.target.tools();
    for tool in [assembler, linker] {
        if !installed(tool) {
            eprintln!("skipped: `{tool}` is not installed");
            return None;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix.s");
    std::fs::write(&prefix, format!("{}\n", build.prefix)).unwrap();
    let object = dir.path().join(format!("{name}.o"));
    let status = Command::new(assembler)
        .args(as_target)
        .args(build.as_args)
        .arg("-o")
        .arg(&object)
        .arg(&prefix)
        .arg(cfi_source(name))
        .status()
        .unwrap();
    assert!(status.success(), "{assembler} failed on {name}.s");
    let Some(eh_frame_hdr) = build.link else {
        return Some(std::fs::read(&object).unwrap());
    };
    let linked = dir.path().join(name);
    let status = Command::new(linker)
        .args(ld_target)
        .args(eh_frame_hdr.then_some("--eh-frame-hdr"))
        .args(build.ld_args)
        .args(["-e", "0", "-o"])
        .arg(&linked)
        .arg(&object)
        .status()
        .unwrap();
    assert!(status.success(), "{linker} failed on {name}.o");
    Some(std::fs::read(&linked).unwrap())
}

/// The address and size of a symbol of `elf`.
pub(crate) fn symbol(elf: &[u8], name: &str) -> (u32, u32) {
    let file = object::File::parse(elf).unwrap();
    let sym = file
        .symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"));
    (
        u32::try_from(sym.address()).unwrap(),
        u32::try_from(sym.size()).unwrap(),
    )
}

/// The path of the libc this test binary runs with (from its own mappings).
pub(crate) fn libc_path() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libc.so.6"))
        .map(PathBuf::from)
        .expect("the test binary maps libc.so.6")
}

fn row(pc: u32, kind: u8, cfa_offset: i16, fp_offset: i16, ra_offset: i16) -> UnwindRow {
    UnwindRow {
        pc,
        kind,
        _pad: 0,
        cfa_offset,
        fp_offset,
        ra_offset,
    }
}

fn sp(pc: u32, cfa: i16, fp: i16) -> UnwindRow {
    row(pc, kind::CFA_SP, cfa, fp, -8)
}

fn bare(pc: u32, kind: u8) -> UnwindRow {
    row(pc, kind, 0, 0, 0)
}

/// The rows from `start` through `end` (inclusive, to see the row that ends a function).
fn rows_between(table: &UnwindTable, start: u32, end: u32) -> Vec<UnwindRow> {
    table
        .rows
        .iter()
        .filter(|r| (start..=end).contains(&r.pc))
        .copied()
        .collect()
}

/// The row in force at `pc`.
fn row_at(rows: &[UnwindRow], pc: u32) -> Option<UnwindRow> {
    let i = rows.partition_point(|r| r.pc <= pc);
    i.checked_sub(1).map(|i| rows[i])
}

fn assert_sorted(rows: &[UnwindRow]) {
    for pair in rows.windows(2) {
        assert!(pair[0].pc < pair[1].pc, "rows out of order: {pair:?}");
        assert_ne!(
            Rule::of(&pair[0]),
            Rule::of(&pair[1]),
            "unmerged rows: {pair:?}"
        );
    }
}

/// Builds the table of a case, checks the invariants every table has, and returns it with the
/// case's ELF.
fn case(name: &str, build: Build<'_>) -> Option<(Vec<u8>, UnwindTable)> {
    let elf = assemble(name, build)?;
    let table = build_table(&elf).unwrap();
    assert_sorted(&table.rows);
    assert_eq!(table.info.rows, table.rows.len() as u64);
    Some((elf, table))
}

/// The rows of function `name`, through its end.
fn function_rows(elf: &[u8], table: &UnwindTable, name: &str) -> (u32, Vec<UnwindRow>) {
    let (start, size) = symbol(elf, name);
    (start, rows_between(table, start, start + size))
}

#[test]
fn frame_pointer_prologue_and_epilogue() {
    let Some((elf, table)) = case("push_pop", Build::X86_64) else {
        return;
    };
    assert_eq!(table.arch, arch::X86_64);
    let (f, rows) = function_rows(&elf, &table, "push_pop");
    assert_eq!(
        rows,
        [
            sp(f, 8, 0),
            sp(f + 1, 16, -16),
            row(f + 4, kind::CFA_FP, 16, -16, -8),
            // The epilogue's CFI restores the CFA but leaves rbp's "saved at CFA-16" rule.
            sp(f + 6, 8, -16),
            bare(f + 7, kind::NO_INFO),
        ]
    );
    assert_eq!(table.info.fdes, 1);
    assert_eq!(table.info.cfi_errors, 0);
}

#[test]
fn stack_adjustment_and_offsets_beyond_16_bits() {
    let Some((elf, table)) = case("sub_rsp", Build::X86_64) else {
        return;
    };
    let (f, rows) = function_rows(&elf, &table, "sub_rsp");
    assert_eq!(
        rows,
        [
            sp(f, 8, 0),
            sp(f + 4, 48, 0),
            sp(f + 9, 8, 0),
            bare(f + 10, kind::NO_INFO)
        ]
    );
    let (g, rows) = function_rows(&elf, &table, "huge_frame");
    assert_eq!(
        rows,
        [
            sp(g, 8, 0),
            bare(g + 7, kind::UNSUPPORTED),
            sp(g + 14, 8, 0),
            bare(g + 15, kind::NO_INFO)
        ]
    );
    assert_eq!(table.info.offset_overflows, 1);
    assert_eq!(table.info.unsupported_rows, 1);
}

#[test]
fn remembered_state_is_restored_after_an_early_return() {
    let Some((elf, table)) = case("remember_state", Build::X86_64) else {
        return;
    };
    let (f, rows) = function_rows(&elf, &table, "remember_state");
    assert_eq!(
        rows,
        [
            sp(f, 8, 0),
            // `je` over the early return does not change the rule: no row at f + 5.
            sp(f + 1, 16, -16),
            sp(f + 6, 8, 0),
            sp(f + 7, 16, -16),
            sp(f + 9, 8, -16),
            bare(f + 10, kind::NO_INFO),
        ]
    );
}

#[test]
fn signal_frames_map_like_others_and_expressions_are_unsupported() {
    let Some((elf, table)) = case("signal_frame", Build::X86_64) else {
        return;
    };
    let (f, rows) = function_rows(&elf, &table, "signal_frame");
    assert_eq!(
        rows,
        [
            sp(f, 8, 0),
            sp(f + 2, 16, -16),
            sp(f + 3, 8, -16),
            bare(f + 4, kind::NO_INFO)
        ]
    );
    let (r, rows) = function_rows(&elf, &table, "restore_rt");
    let (_, size) = symbol(&elf, "restore_rt");
    assert_eq!(
        rows,
        [bare(r, kind::UNSUPPORTED), bare(r + size, kind::NO_INFO)]
    );
}

#[test]
fn outermost_frame_gaps_and_plt_stubs() {
    let Some((elf, table)) = case("outermost", Build::X86_64) else {
        return;
    };
    let (start, rows) = function_rows(&elf, &table, "_start");
    assert_eq!(
        rows,
        [bare(start, kind::END), bare(start + 8, kind::NO_INFO)]
    );
    let (gap, size) = symbol(&elf, "no_cfi");
    assert_eq!(rows_between(&table, start + 9, gap + size), []);
    let (w, rows) = function_rows(&elf, &table, "with_cfi");
    assert_eq!(
        rows,
        [
            sp(w, 8, 0),
            sp(w + 1, 16, 0),
            sp(w + 2, 8, 0),
            bare(w + 3, kind::NO_INFO)
        ]
    );
    let (p, rows) = function_rows(&elf, &table, "plt");
    let (_, size) = symbol(&elf, "plt");
    let (lazy, _) = symbol(&elf, "plt_lazy");
    let (other, _) = symbol(&elf, "plt_other");
    assert_eq!(
        rows,
        [
            sp(p, 16, 0),
            sp(p + 6, 24, 0),
            row(lazy, kind::PLT, 8, 0, -8),
            bare(other, kind::UNSUPPORTED),
            bare(p + size, kind::NO_INFO),
        ]
    );
}

#[test]
fn aarch64_frame_record_leaf_and_outermost() {
    let build = Build {
        target: Target::Aarch64,
        ..Build::X86_64
    };
    let Some((elf, table)) = case("aarch64", build) else {
        return;
    };
    assert_eq!(table.arch, arch::AARCH64);
    let lr = |pc, cfa| row(pc, kind::CFA_SP, cfa, 0, 0);
    let (f, rows) = function_rows(&elf, &table, "frame");
    assert_eq!(
        rows,
        [
            // The return address is in x30 until `stp` saves it; `paciasp` changes no rule.
            lr(f, 0),
            row(f + 8, kind::CFA_SP, 16, -16, -8),
            row(f + 12, kind::CFA_FP, 16, -16, -8),
            lr(f + 20, 0),
            bare(f + 28, kind::NO_INFO),
        ]
    );
    let (l, rows) = function_rows(&elf, &table, "leaf");
    assert_eq!(rows, [lr(l, 0), bare(l + 8, kind::NO_INFO)]);
    let (s, rows) = function_rows(&elf, &table, "_start");
    assert_eq!(rows, [bare(s, kind::END), bare(s + 12, kind::NO_INFO)]);
    assert_eq!(table.info.cfi_errors, 0);
}

#[test]
fn later_fde_wins_where_fdes_overlap_or_repeat() {
    // GNU ld refuses an .eh_frame_hdr over overlapping FDEs, so this walks the sorted FDE list.
    let build = Build {
        link: Some(false),
        ..Build::X86_64
    };
    let Some((elf, table)) = case("overlap", build) else {
        return;
    };
    let (o, _) = symbol(&elf, "outer");
    let (t, _) = symbol(&elf, "twice");
    assert_eq!(
        table.rows,
        [
            sp(o, 8, 0),
            sp(o + 1, 16, 0),
            sp(o + 8, 32, 0),
            bare(o + 16, kind::NO_INFO),
            sp(t, 48, 0),
            bare(t + 8, kind::NO_INFO),
        ]
    );
    assert_eq!(table.info.overlapping_fdes, 2);
    assert_eq!(table.info.fdes, 3);
}

#[test]
fn search_table_and_sorted_walk_agree() {
    for name in [
        "push_pop",
        "sub_rsp",
        "remember_state",
        "signal_frame",
        "outermost",
    ] {
        let without_hdr = Build {
            link: Some(false),
            ..Build::X86_64
        };
        let (Some((_, with)), Some((elf, without))) =
            (case(name, Build::X86_64), case(name, without_hdr))
        else {
            return;
        };
        let file = object::File::parse(&*elf).unwrap();
        assert!(file.section_by_name(".eh_frame_hdr").is_none());
        assert_eq!(with.rows, without.rows, "{name}");
    }
}

#[test]
fn debug_frame_is_used_without_eh_frame() {
    let build = Build {
        prefix: ".cfi_sections .debug_frame",
        ..Build::X86_64
    };
    let (Some((elf, table)), Some((_, eh))) =
        (case("push_pop", build), case("push_pop", Build::X86_64))
    else {
        return;
    };
    let file = object::File::parse(&*elf).unwrap();
    assert!(file.section_by_name(".eh_frame").is_none());
    assert!(table.info.debug_frame_bytes > 0);
    assert_eq!(table.rows, eh.rows);

    // Enough CFI for compression to pay off (the assembler stores small sections uncompressed).
    let prefix = format!(
        "{}\n.rept 64\n.cfi_startproc\npush %rbp\n.cfi_def_cfa_offset 16\npop %rbp\n\
         .cfi_def_cfa_offset 8\nret\n.cfi_endproc\n.endr",
        build.prefix
    );
    let compressed = Build {
        prefix: &prefix,
        as_args: &["--compress-debug-sections=zlib"],
        ld_args: &["--compress-debug-sections=zlib"],
        ..build
    };
    let Some(elf) = assemble("push_pop", compressed) else {
        return;
    };
    assert!(matches!(
        build_table(&elf),
        Err(TableError::CompressedDebugFrame)
    ));
}

#[test]
fn rejects_objects_it_cannot_describe() {
    let i386 = Build {
        target: Target::I386,
        ..Build::X86_64
    };
    if let Some(elf) = assemble("i386", i386) {
        let err = build_table(&elf).unwrap_err();
        assert!(matches!(err, TableError::UnsupportedArch(_)), "{err}");
    }
    let object = Build {
        link: None,
        ..Build::X86_64
    };
    if let Some(elf) = assemble("push_pop", object) {
        assert!(matches!(build_table(&elf), Err(TableError::Relocatable)));
    }
    let high = Build {
        ld_args: &["-Ttext=0x100000000"],
        ..Build::X86_64
    };
    if let Some(elf) = assemble("push_pop", high) {
        assert!(matches!(
            build_table(&elf),
            Err(TableError::TooLarge { .. })
        ));
    }
    assert!(matches!(
        build_table(b"\x7fELF but not really"),
        Err(TableError::NotElf(_))
    ));
}

/// A section's range in the file.
fn file_range(elf: &[u8], name: &str) -> std::ops::Range<usize> {
    let file = object::File::parse(elf).unwrap();
    let (offset, size) = file
        .section_by_name(name)
        .and_then(|s| object::ObjectSection::file_range(&s))
        .unwrap();
    offset as usize..(offset + size) as usize
}

/// Builds a table from bytes that may be malformed: an error, or a table with its invariants.
fn build_untrusted(elf: &[u8]) -> Option<UnwindTable> {
    let table = build_table(elf).ok()?;
    for pair in table.rows.windows(2) {
        assert!(pair[0].pc < pair[1].pc, "rows out of order: {pair:?}");
    }
    Some(table)
}

#[test]
fn truncated_and_garbage_input_fails_cleanly() {
    let elf = std::fs::read(libc_path()).unwrap();
    for len in [0, 4, 16, 63, 64, 1000, elf.len() / 2, elf.len() - 1] {
        let _ = build_untrusted(&elf[..len]);
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let garbage: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(8192).collect();
    assert!(matches!(build_table(&garbage), Err(TableError::NotElf(_))));
    // An ELF header on garbage.
    let mut headed = elf[..64].to_vec();
    headed.extend_from_slice(&garbage);
    let _ = build_untrusted(&headed);
}

#[test]
fn bogus_fde_length_stops_with_what_was_parsed() {
    let Some(elf) = assemble("outermost", Build::X86_64) else {
        return;
    };
    let eh_frame = file_range(&elf, ".eh_frame");
    let cie_len = u32::from_le_bytes(elf[eh_frame.start..][..4].try_into().unwrap()) as usize;
    // The first FDE, right after the first CIE: its length now runs far past the section.
    let mut bogus = elf.clone();
    bogus[eh_frame.start + 4 + cie_len..][..4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let table = build_untrusted(&bogus).unwrap();
    assert!(table.info.cfi_errors > 0, "{:?}", table.info);

    // A zero-length FDE is skipped.
    let mut empty = elf.clone();
    // length, CIE pointer, pcrel start, then the range.
    empty[eh_frame.start + 4 + cie_len + 12..][..4].copy_from_slice(&0u32.to_le_bytes());
    let table = build_untrusted(&empty).unwrap();
    assert_eq!(table.info.skipped_fdes, 1, "{:?}", table.info);
}

#[test]
fn unsorted_search_table_falls_back_to_the_sorted_walk() {
    let elf = std::fs::read(libc_path()).unwrap();
    let expected = build_table(&elf).unwrap();
    assert!(expected.rows.iter().any(|r| r.kind == kind::PLT));
    let hdr = file_range(&elf, ".eh_frame_hdr");
    // version, 3 encodings, eh_frame_ptr (sdata4), fde_count (udata4), then 8-byte entries.
    let table = hdr.start + 12;
    let mut swapped = elf.clone();
    swapped[table..table + 16]
        .copy_from_slice(&[&elf[table + 8..table + 16], &elf[table..table + 8]].concat());
    assert_eq!(build_table(&swapped).unwrap().rows, expected.rows);
}

/// The `.eh_frame` offset of every FDE of `elf`, by start address.
fn fde_offsets(elf: &[u8]) -> HashMap<u64, usize> {
    let file = object::File::parse(elf).unwrap();
    let section = file.section_by_name(".eh_frame").unwrap();
    let bases = BaseAddresses::default().set_eh_frame(object::ObjectSection::address(&section));
    let eh_frame = EhFrame::new(object::ObjectSection::data(&section).unwrap(), LittleEndian);
    let mut entries = eh_frame.entries(&bases);
    let mut offsets = HashMap::new();
    while let Some(entry) = entries.next().unwrap() {
        if let CieOrFde::Fde(partial) = entry {
            let fde = partial.parse(EhFrame::cie_from_offset).unwrap();
            offsets.insert(fde.initial_address(), partial.offset());
        }
    }
    offsets
}

#[test]
fn search_table_entry_for_an_empty_fde_leads_to_the_real_one_after_it() {
    // As in libLLVM: an empty FDE right before a function's FDE, at the same address, and the
    // search table pointing at the empty one. GNU ld writes neither, so patch them in: with_cfi's
    // FDE (just before plt's) becomes empty and moves to plt's address, and plt's table entry
    // points at it.
    let Some(elf) = assemble("outermost", Build::X86_64) else {
        return;
    };
    let expected = build_table(&elf).unwrap();
    let (plt, plt_size) = symbol(&elf, "plt");
    let (with_cfi, _) = symbol(&elf, "with_cfi");
    let offsets = fde_offsets(&elf);
    let empty = offsets[&u64::from(with_cfi)];
    let file = object::File::parse(&*elf).unwrap();
    let address = |name| object::ObjectSection::address(&file.section_by_name(name).unwrap());
    let (eh_frame, hdr) = (address(".eh_frame"), address(".eh_frame_hdr"));
    let (eh_frame_at, hdr_at) = (
        file_range(&elf, ".eh_frame").start,
        file_range(&elf, ".eh_frame_hdr").start,
    );

    let mut patched = elf.clone();
    let mut put = |at: usize, value: i64| {
        patched[at..at + 4].copy_from_slice(&i32::try_from(value).unwrap().to_le_bytes());
    };
    // FDE: length, CIE pointer, start (pc-relative), length of code.
    let pc_field = eh_frame + empty as u64 + 8;
    put(eh_frame_at + empty + 8, i64::from(plt) - pc_field as i64);
    put(eh_frame_at + empty + 12, 0);
    // Search table: 2 entries (_start, plt), the second pointing at the empty FDE.
    put(hdr_at + 8, 2);
    put(hdr_at + 12 + 8, i64::from(plt) - hdr as i64);
    put(
        hdr_at + 12 + 12,
        (eh_frame + empty as u64) as i64 - hdr as i64,
    );

    let table = build_untrusted(&patched).unwrap();
    assert_eq!(
        rows_between(&table, plt, plt + plt_size),
        rows_between(&expected, plt, plt + plt_size)
    );
    assert_eq!((table.info.fdes, table.info.skipped_fdes), (2, 0));
}

#[test]
fn random_corruption_of_cfi_never_panics() {
    let Some(elf) = assemble("outermost", Build::X86_64) else {
        return;
    };
    let libc = std::fs::read(libc_path()).unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    for (elf, rounds) in [(&elf, 3000), (&libc, 30)] {
        let sections = [
            file_range(elf, ".eh_frame"),
            file_range(elf, ".eh_frame_hdr"),
        ];
        for _ in 0..rounds {
            let mut bytes = elf.clone();
            for _ in 0..rng.usize(1..8) {
                let section = &sections[rng.usize(..sections.len())];
                bytes[rng.usize(section.clone())] = rng.u8(..);
            }
            let _ = build_untrusted(&bytes);
        }
    }
}

/// A process can truncate a file it maps at any time, while the agent builds its table: the
/// build fails or finishes, and the agent lives (a read through a mapping of the file would
/// raise SIGBUS).
#[test]
fn a_file_truncated_while_its_table_is_built_does_not_kill_the_agent() {
    crate::test_support::in_child(
        "unwind::table::tests::a_file_truncated_while_its_table_is_built_does_not_kill_the_agent",
        || {
            let dir = tempfile::tempdir().unwrap();
            let copy = dir.path().join("libc-copy.so");
            std::fs::copy(libc_path(), &copy).unwrap();
            let file = std::fs::File::open(&copy).unwrap();
            let mut rows = 0u64;
            let result = build_rows_from_file(&file, &mut |_| {
                rows += 1;
                if rows == 1 {
                    // What the process that maps it may do.
                    std::fs::File::options()
                        .write(true)
                        .open(&copy)
                        .unwrap()
                        .set_len(0)
                        .unwrap();
                }
            });
            eprintln!("{rows} rows, then {result:?}");
            assert!(rows >= 1);
        },
    );
}
