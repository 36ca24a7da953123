//! Finding a Go table in an ELF file: its section, or its header inside the sections external
//! linkers merge it into, and the segments that turn its virtual addresses into file offsets.
use object::{Object, ObjectSection, ObjectSegment};

use super::{Bytes, Version, read_header};

/// A `PT_LOAD` segment, to turn virtual addresses into file offsets.
#[derive(Clone, Copy, Debug)]
pub(super) struct Load {
    vaddr: u64,
    offset: u64,
    filesz: u64,
}

/// Where the table and the rest of the module data sit in an ELF file.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// File offset and virtual address of the table's header, and its size.
    pub offset: u64,
    pub vaddr: u64,
    pub size: u64,
    pub(super) loads: Vec<Load>,
    /// Sections that may hold `runtime.firstmoduledata` (file offset, vaddr, size).
    pub(super) data_sections: Vec<(u64, u64, u64)>,
}

impl Layout {
    /// Finds the table in a parsed ELF file: the `.gopclntab` section (`.data.rel.ro.gopclntab`
    /// in position-independent binaries), else a table header inside `.data.rel.ro` or `.rodata`
    /// (external linkers merge the named section into those). `None` for files without Go code.
    pub fn of<'d, R: object::ReadRef<'d>>(
        elf: &object::File<'d, R>,
        bytes: &mut impl Bytes,
    ) -> Option<Layout> {
        let loads = elf
            .segments()
            .filter_map(|s| {
                let (offset, filesz) = s.file_range();
                Some(Load {
                    vaddr: s.address(),
                    offset,
                    filesz: filesz.min(s.size()),
                })
                .filter(|l| l.filesz > 0)
            })
            .collect();
        let data_sections = [".noptrdata", ".data", ".data.rel.ro"]
            .iter()
            .filter_map(|name| {
                let s = elf.section_by_name(name)?;
                let (offset, size) = s.file_range()?;
                Some((offset, s.address(), size))
            })
            .collect();
        let mut layout = Layout {
            loads,
            data_sections,
            ..Layout::default()
        };
        for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
            if let Some(s) = elf.section_by_name(name)
                && let Some((offset, size)) = s.file_range()
            {
                layout.offset = offset;
                layout.vaddr = s.address();
                layout.size = size;
                return Some(layout);
            }
        }
        // Merged into another section: look for a header at 8-byte aligned offsets.
        for name in [".data.rel.ro", ".rodata"] {
            let Some(s) = elf.section_by_name(name) else {
                continue;
            };
            let Some((offset, size)) = s.file_range() else {
                continue;
            };
            if let Some(at) = find_header(bytes, offset, size) {
                layout.offset = offset + at;
                layout.vaddr = s.address().wrapping_add(at);
                layout.size = size - at;
                return Some(layout);
            }
        }
        None
    }

    /// The layout of a table that is the whole of `bytes` (tests, fuzzing).
    pub fn whole(size: u64) -> Layout {
        Layout {
            size,
            ..Layout::default()
        }
    }

    pub(super) fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|l| vaddr >= l.vaddr && vaddr - l.vaddr < l.filesz)
            .and_then(|l| l.offset.checked_add(vaddr - l.vaddr))
    }
}

/// Scans `size` bytes at `offset` for a plausible table header, in 64 KiB chunks.
fn find_header(bytes: &mut impl Bytes, offset: u64, size: u64) -> Option<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut buf = vec![0u8; CHUNK as usize + 8];
    let mut at = 0;
    while at + 8 <= size {
        let len = (size - at).min(CHUNK + 8) as usize;
        if !bytes.read_at(offset + at, &mut buf[..len]) {
            return None;
        }
        for i in (0..len.saturating_sub(7)).step_by(8) {
            let magic = u32::from_le_bytes(buf[i..i + 4].try_into().ok()?);
            if Version::of_magic(magic).is_ok()
                && buf[i + 4] == 0
                && buf[i + 5] == 0
                && matches!(buf[i + 6], 1 | 2 | 4)
                && buf[i + 7] == 8
            {
                let candidate = at + i as u64;
                if read_header(bytes, offset + candidate, size - candidate).is_ok() {
                    return Some(candidate);
                }
            }
        }
        at += CHUNK;
    }
    None
}
