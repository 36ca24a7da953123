//! ELF files built byte by byte for tests and fuzz targets (`--features test-support`): inputs
//! the parsers must handle that no toolchain writes on purpose.

/// A minimal ELF64 x86_64 shared object with the given `PT_LOAD` segments: (p_offset, p_vaddr,
/// p_filesz, p_flags, p_align).
pub fn elf_with_segments(segments: &[(u64, u64, u64, u32, u64)]) -> Vec<u8> {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // ELFCLASS64
    elf[5] = 1; // little endian
    elf[6] = 1; // EV_CURRENT
    elf[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    elf[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    for &(offset, vaddr, filesz, flags, align) in segments {
        elf.extend_from_slice(&object::elf::PT_LOAD.to_le_bytes());
        elf.extend_from_slice(&flags.to_le_bytes());
        for v in [offset, vaddr, vaddr, filesz, filesz, align] {
            elf.extend_from_slice(&v.to_le_bytes());
        }
    }
    elf
}

/// Segment flags: read-only data, and code.
pub const R: u32 = object::elf::PF_R;
pub const RX: u32 = object::elf::PF_R | object::elf::PF_X;
