//! Reading the few ELF structures the agent needs from files other processes map: the GNU build
//! id, and the executable segments. Always with `pread` into our own memory, never through a
//! mapping: a file's owner can truncate it at any time, and a read through a mapping past the
//! new end raises SIGBUS, which would kill the agent.
use std::fs::File;
use std::os::unix::fs::FileExt;

use object::elf::{ELF_NOTE_GNU, NT_GNU_BUILD_ID, PF_X, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::read::{ReadCache, ReadCacheOps, ReadRef};

use crate::types::BuildId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    #[error("not a readable ELF file: {0}")]
    Parse(#[from] object::Error),
    #[error("not an ELF file: too short for the header")]
    TooShort,
}

/// A file read with `pread` (`read_at`): no shared file offset, so threads can read the same
/// open file at once, and no mapping.
#[derive(Debug)]
pub struct Pread<'a> {
    file: &'a File,
    pos: u64,
}

impl<'a> Pread<'a> {
    /// Parsers read through `&ReadCache::new(Pread::new(file))`, which keeps what they read.
    pub fn new(file: &'a File) -> Self {
        Self { file, pos: 0 }
    }
}

impl ReadCacheOps for Pread<'_> {
    fn len(&mut self) -> Result<u64, ()> {
        self.file.metadata().map(|m| m.len()).map_err(|_| ())
    }

    fn seek(&mut self, pos: u64) -> Result<u64, ()> {
        self.pos = pos;
        Ok(pos)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        let n = self.file.read_at(buf, self.pos).map_err(|_| ())?;
        self.pos += n as u64;
        Ok(n)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ()> {
        self.file.read_exact_at(buf, self.pos).map_err(|_| ())?;
        self.pos += buf.len() as u64;
        Ok(())
    }
}

/// The GNU build id of an open ELF file (32- or 64-bit, either byte order), read with `pread`;
/// `None` when it has none.
///
/// Only a note named `GNU` of type `NT_GNU_BUILD_ID` counts: other owners use type 3 too
/// (SystemTap's `stapsdt` probe descriptors, in `.note.stapsdt` of libstdc++ and of everything
/// that links it statically, such as `librustc_driver`), and blazesym 0.2.7 takes the first
/// note of type 3 whatever its owner (docs/upstream/blazesym-build-id-owner.md). Notes in
/// `PT_NOTE` segments (what the loader maps) come first, then `SHT_NOTE` sections (files without
/// program headers, such as separate debug files).
pub fn read_build_id(file: &File) -> Result<Option<BuildId>, ElfError> {
    Ok(read_note(file, ELF_NOTE_GNU, NT_GNU_BUILD_ID)?.map(BuildId))
}

/// The Go build id of an open ELF file (the `Go` note of type 4 the Go linker writes in
/// `.note.go.buildid`, stripped binaries included), read with `pread`.
pub fn read_go_build_id(file: &File) -> Result<Option<String>, ElfError> {
    Ok(read_note(file, b"Go", NT_GO_BUILD_ID)?
        .map(|desc| String::from_utf8_lossy(&desc).into_owned())
        .filter(|id| !id.is_empty()))
}

/// Type of the Go linker's build id note (`cmd/link`'s `ELF_NOTE_GOBUILDID_TAG`).
const NT_GO_BUILD_ID: u32 = 4;

/// The description of the first note of `owner` and `n_type`.
fn read_note(file: &File, owner: &[u8], n_type: u32) -> Result<Option<Vec<u8>>, ElfError> {
    let data = ReadCache::new(Pread::new(file));
    let data = &data;
    let ident = data.read_bytes_at(0, 16).map_err(|()| ElfError::TooShort)?;
    match ident.get(4) {
        Some(&object::elf::ELFCLASS64) => {
            note_of::<object::elf::FileHeader64<object::Endianness>, _>(data, owner, n_type)
        }
        _ => note_of::<object::elf::FileHeader32<object::Endianness>, _>(data, owner, n_type),
    }
}

fn note_of<'d, Elf: FileHeader<Endian = object::Endianness>, R: ReadRef<'d>>(
    data: R,
    owner: &[u8],
    n_type: u32,
) -> Result<Option<Vec<u8>>, ElfError> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let wanted = |note: &object::read::elf::Note<'d, Elf>| {
        note.name() == owner && note.n_type(endian) == n_type
    };
    for segment in header.program_headers(endian, data)? {
        if let Some(mut notes) = segment.notes(endian, data)? {
            while let Some(note) = notes.next()? {
                if wanted(&note) {
                    return Ok(Some(note.desc().to_vec()));
                }
            }
        }
    }
    for section in header.sections(endian, data)?.iter() {
        if let Some(mut notes) = section.notes(endian, data)? {
            while let Some(note) = notes.next()? {
                if wanted(&note) {
                    return Ok(Some(note.desc().to_vec()));
                }
            }
        }
    }
    Ok(None)
}

/// Executable `PT_LOAD` segments of an ELF file: (file offset, virtual address, file size).
/// Empty when the data is not a 64-bit ELF file.
pub fn executable_segments<'d, R: ReadRef<'d>>(data: R) -> Vec<(u64, u64, u64)> {
    let Ok(header) = object::elf::FileHeader64::<object::Endianness>::parse(data) else {
        return Vec::new();
    };
    let Ok(endian) = header.endian() else {
        return Vec::new();
    };
    let Ok(headers) = header.program_headers(endian, data) else {
        return Vec::new();
    };
    headers
        .iter()
        .filter(|h| h.p_type(endian) == PT_LOAD && h.p_flags(endian) & PF_X != 0)
        .map(|h| (h.p_offset(endian), h.p_vaddr(endian), h.p_filesz(endian)))
        .collect()
}

/// Load bias of a mapping (runtime address − object virtual address), from the executable segment
/// (of [`executable_segments`]) holding its file offset. The kernel maps a segment from the page
/// holding its `p_offset`, so a mapping may start before the segment's own offset: the segment
/// is matched from that page, in the running kernel's page size. The one rule the unwind-table
/// loader, the replay tests and the fuzz target all use.
pub fn load_bias(segments: &[(u64, u64, u64)], start: u64, file_offset: u64) -> Option<u64> {
    let page = page_size();
    let (p_offset, p_vaddr, _) = segments.iter().find(|(off, _, size)| {
        let first = off - off % page;
        file_offset >= first && file_offset < off.saturating_add(*size)
    })?;
    let vaddr = file_offset.wrapping_add(p_vaddr.wrapping_sub(*p_offset));
    Some(start.wrapping_sub(vaddr))
}

/// [`load_bias`] of a mapping of the ELF file `elf` (bytes in memory); `None` when it is not a
/// 64-bit ELF file or no executable segment holds the offset.
pub fn load_bias_in(elf: &[u8], start: u64, file_offset: u64) -> Option<u64> {
    load_bias(&executable_segments(elf), start, file_offset)
}

/// The kernel's page size (4 KiB unless an arm64 kernel was built for 16 or 64 KiB pages).
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
    })
}

/// [`executable_segments`] of an open file, read with `pread`.
pub fn executable_segments_of(file: &File) -> Vec<(u64, u64, u64)> {
    executable_segments(&ReadCache::new(Pread::new(file)))
}

#[cfg(any(test, feature = "test-support"))]
pub mod testing;
#[cfg(test)]
pub(crate) mod tests;
