use std::io::Write as _;

use super::testing::{R, RX, elf_with_segments};
use super::*;

/// A note: owner name, type, descriptor.
pub(crate) type Note<'a> = (&'a [u8], u32, &'a [u8]);

/// A minimal 64-bit little-endian x86_64 shared object holding only notes, one `SHT_NOTE`
/// section each (`.note.0`, …) and, when `segments`, one `PT_NOTE` segment each, as `ld` lays
/// out `.note.gnu.build-id` (SystemTap's `.note.stapsdt` is a section only).
pub(crate) fn elf_with_notes(notes: &[Note<'_>], segments: bool) -> Vec<u8> {
    let pad4 = |v: &mut Vec<u8>| v.resize(v.len().next_multiple_of(4), 0);
    let phnum = if segments { notes.len() } else { 0 };
    let mut body = Vec::new();
    let mut ranges = Vec::new();
    let data_start = 64 + 56 * phnum;
    for (name, kind, desc) in notes {
        let start = data_start + body.len();
        body.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        body.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        body.extend_from_slice(&kind.to_le_bytes());
        body.extend_from_slice(name);
        body.push(0);
        pad4(&mut body);
        body.extend_from_slice(desc);
        pad4(&mut body);
        ranges.push((start, data_start + body.len() - start));
    }
    let mut shstrtab = b"\0.shstrtab\0".to_vec();
    let mut names = Vec::new();
    for i in 0..notes.len() {
        names.push(shstrtab.len());
        shstrtab.extend_from_slice(format!(".note.{i}\0").as_bytes());
    }
    let shstrtab_at = data_start + body.len();
    body.extend_from_slice(&shstrtab);
    body.resize(
        (data_start + body.len()).next_multiple_of(8) - data_start,
        0,
    );
    let shoff = data_start + body.len();
    let shnum = notes.len() + 2;

    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&3u16.to_le_bytes()); // ET_DYN
    elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    elf.extend_from_slice(&(if segments { 64u64 } else { 0 }).to_le_bytes());
    elf.extend_from_slice(&(shoff as u64).to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [
        64u16,
        56,
        phnum as u16,
        64,
        shnum as u16,
        (shnum - 1) as u16,
    ] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    for &(start, len) in ranges.iter().take(phnum) {
        elf.extend_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        elf.extend_from_slice(&4u32.to_le_bytes()); // PF_R
        for word in [start, start, start, len, len, 4] {
            elf.extend_from_slice(&(word as u64).to_le_bytes());
        }
    }
    elf.extend_from_slice(&body);
    let mut section = |name: usize, kind: u32, flags: u64, (start, len): (usize, usize)| {
        elf.extend_from_slice(&(name as u32).to_le_bytes());
        elf.extend_from_slice(&kind.to_le_bytes());
        for word in [flags, 0, start as u64, len as u64] {
            elf.extend_from_slice(&word.to_le_bytes());
        }
        elf.extend_from_slice(&0u32.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes());
        elf.extend_from_slice(&(if kind == 0 { 0u64 } else { 4 }).to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes());
    };
    section(0, 0, 0, (0, 0));
    for (i, range) in ranges.iter().enumerate() {
        // SHF_ALLOC for the notes the loader maps.
        section(names[i], 7, if segments { 2 } else { 0 }, *range);
    }
    section(1, 3, 0, (shstrtab_at, shstrtab.len()));
    elf
}

pub(crate) fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    file.flush().unwrap();
    file
}

/// SystemTap's probe descriptor for `libstdcxx:catch`, as in `librustc_driver-*.so`.
const SDT: Note<'static> = (
    b"stapsdt",
    3,
    b"\x9b\x87\xc1\x04\0\0\0\0libstdcxx\0catch\08@%r8 8@-80(%rbx)\0",
);
const GNU_ID: [u8; 20] =
    *b"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67";

fn blazesym_says(file: &tempfile::NamedTempFile) -> Option<Vec<u8>> {
    blazesym::helper::read_elf_build_id(file.path())
        .unwrap()
        .map(|id| id.into_owned())
}

#[test]
fn an_sdt_probe_note_is_not_a_build_id() {
    let file = write_temp(&elf_with_notes(&[SDT], false));
    assert_eq!(read_build_id(file.as_file()).unwrap(), None);
    // The upstream bug this works around (docs/upstream/blazesym-build-id-owner.md): when this
    // fails, blazesym checks the owner and `read_build_id` may go back to it.
    assert_eq!(blazesym_says(&file).as_deref(), Some(SDT.2));
}

#[test]
fn the_gnu_build_id_is_found_behind_an_sdt_note() {
    let notes = [SDT, (b"GNU".as_slice(), 3, GNU_ID.as_slice())];
    for segments in [false, true] {
        let file = write_temp(&elf_with_notes(&notes, segments));
        assert_eq!(
            read_build_id(file.as_file()).unwrap(),
            Some(BuildId(GNU_ID.to_vec())),
            "segments: {segments}"
        );
        assert_eq!(blazesym_says(&file).as_deref(), Some(SDT.2));
    }
}

#[test]
fn other_gnu_notes_and_owners_are_skipped() {
    let notes = [
        (b"GNU".as_slice(), 1, [0u8; 16].as_slice()), // NT_GNU_ABI_TAG
        (b"Go".as_slice(), 3, b"not a gnu id".as_slice()),
        (b"GNU".as_slice(), 3, GNU_ID.as_slice()),
    ];
    let file = write_temp(&elf_with_notes(&notes, true));
    assert_eq!(
        read_build_id(file.as_file()).unwrap(),
        Some(BuildId(GNU_ID.to_vec()))
    );
}

#[test]
fn garbage_and_short_files_are_errors_not_panics() {
    for bytes in [&b""[..], b"\x7fELF", &[0xff; 200][..]] {
        let file = write_temp(bytes);
        assert!(read_build_id(file.as_file()).is_err(), "{bytes:?}");
    }
    let mut cut = elf_with_notes(&[SDT, (b"GNU", 3, &GNU_ID)], true);
    cut.truncate(cut.len() / 2);
    let file = write_temp(&cut);
    let _ = read_build_id(file.as_file());
}

/// The file the issue was seen on: rustup's `librustc_driver` has SystemTap notes and no
/// `.note.gnu.build-id`, and blazesym turned the `libstdcxx` probe into its "build id". Checked
/// against the `object` crate's reader, which checks the owner (Debian's build of the library
/// has a GNU note; then both agree).
#[test]
fn librustc_driver_build_id_is_the_gnu_note_or_none() {
    let Some(path) = glob_rustc_driver() else {
        eprintln!("skipped: no librustc_driver-*.so on this machine");
        return;
    };
    let file = File::open(&path).unwrap();
    // SAFETY: a toolchain file nobody rewrites during the test.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let reference = object::Object::build_id(&object::File::parse(&*map).unwrap())
        .unwrap()
        .map(|id| BuildId(id.to_vec()));
    assert_eq!(
        read_build_id(&file).unwrap(),
        reference,
        "{}",
        path.display()
    );
    if reference.is_none() {
        let theirs = blazesym::helper::read_elf_build_id(&path).unwrap();
        assert!(
            theirs.is_some_and(|id| id.windows(9).any(|w| w == b"libstdcxx")),
            "blazesym reads an SDT descriptor as the build id of {}",
            path.display()
        );
    }
}

fn glob_rustc_driver() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let dirs = home
        .map(|h| h.join(".rustup/toolchains"))
        .and_then(|t| std::fs::read_dir(t).ok())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("lib"))
        .chain([std::path::PathBuf::from("/usr/lib/x86_64-linux-gnu")]);
    for dir in dirs {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("librustc_driver-") && name.ends_with(".so") {
                return Some(entry.path());
            }
        }
    }
    None
}

#[test]
fn the_agents_own_build_id_matches_the_gnu_note() {
    let exe = File::open("/proc/self/exe").unwrap();
    // Rust test binaries are linked with a GNU build id on Linux.
    let ours = read_build_id(&exe).unwrap().expect("a build id");
    let object_crate = {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        object::Object::build_id(&file).unwrap().map(<[u8]>::to_vec)
    };
    assert_eq!(Some(ours.0), object_crate);
}

#[test]
fn load_bias_of_page_aligned_segments() {
    // GNU ld -z separate-code: headers, code, rodata, each on its own page.
    let elf = elf_with_segments(&[
        (0, 0, 0x600, R, 0x1000),
        (0x1000, 0x1000, 0x2345, RX, 0x1000),
        (0x4000, 0x4000, 0x800, R, 0x1000),
    ]);
    let base = 0x5555_5555_4000;
    assert_eq!(load_bias_in(&elf, base + 0x1000, 0x1000), Some(base));
    // A non-PIE executable linked at 0x400000 maps at its link address: bias 0.
    let exe = elf_with_segments(&[
        (0, 0x40_0000, 0x600, R, 0x1000),
        (0x1000, 0x40_1000, 0x2000, RX, 0x1000),
    ]);
    assert_eq!(load_bias_in(&exe, 0x40_1000, 0x1000), Some(0));
    assert_eq!(
        load_bias_in(&elf, base + 0x9000, 0x9000),
        None,
        "no segment there"
    );
    assert_eq!(load_bias_in(b"not an ELF file", base, 0), None);
}

#[test]
fn load_bias_of_a_code_segment_sharing_a_page_with_rodata() {
    // lld without separate-code: code starts mid-page at file offset 0x5c0 (vaddr 0x15c0); the
    // executable mapping starts at the page holding it, file offset 0, which the read-only
    // segment covers too.
    let elf = elf_with_segments(&[(0, 0, 0x5c0, R, 0x1000), (0x5c0, 0x15c0, 0x900, RX, 0x1000)]);
    let base = 0x7f00_0000_0000;
    assert_eq!(load_bias_in(&elf, base + 0x1000, 0), Some(base));
}

#[test]
fn load_bias_of_this_test_binary_places_a_function_at_its_symbol() {
    let exe = std::env::current_exe().unwrap();
    let elf = std::fs::read(&exe).unwrap();
    let here =
        load_bias_of_this_test_binary_places_a_function_at_its_symbol as *const () as usize as u64;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapping = crate::maps::parse(&maps)
        .0
        .into_iter()
        .find(|m| (m.start..m.end).contains(&here))
        .unwrap();
    let bias = load_bias_in(&elf, mapping.start, mapping.offset).unwrap();
    let file = object::File::parse(&*elf).unwrap();
    let symbol = object::ObjectSymbol::name(
        &object::Object::symbols(&file)
            .find(|s| object::ObjectSymbol::address(s) == here - bias)
            .expect("a symbol at the function's object address"),
    )
    .unwrap()
    .to_string();
    assert!(
        symbol.contains("load_bias_of_this_test_binary_places_a_function_at_its_symbol"),
        "{symbol}"
    );
}

#[test]
fn bias_from_the_segment_holding_the_offset() {
    // A PIE: text at file offset 0x1040, vaddr 0x1040, mapped at 0x5555_5555_5000 from
    // offset 0x1000.
    let segments = [(0x1040, 0x1040, 0x2000)];
    assert_eq!(
        load_bias(&segments, 0x5555_5555_5000, 0x1000),
        Some(0x5555_5555_4000)
    );
    // A non-PIE: vaddr 0x401000 at offset 0x1000, mapped where it says.
    let segments = [(0x1000, 0x40_1000, 0x2000)];
    assert_eq!(load_bias(&segments, 0x40_1000, 0x1000), Some(0));
    assert_eq!(load_bias(&segments, 0x40_1000, 0x9000), None);
}
