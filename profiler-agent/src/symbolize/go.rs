//! Go code from `.gopclntab` (see [`crate::gopclntab`]): names, files, lines and inlined calls,
//! the same for stripped and unstripped binaries, without DWARF.
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

use object::read::ReadCache;

use super::{Frame, FrameKind, Frames, intern};
use crate::gopclntab::{BlockFile, Layout, Table};
use crate::process::{ObjectFile, ObjectKey};
use crate::types::FileOffset;

/// Blocks each open table keeps cached between exports (512 KiB); the caches are emptied after
/// each export ([`GoResolver::release`]), so the bound that matters is this times the Go
/// binaries resolved within one window.
const BLOCKS_PER_TABLE: usize = 32;

struct GoObject {
    table: Table<BlockFile>,
    /// Executable segments: (file offset, virtual address, size).
    segments: Vec<(u64, u64, u64)>,
}

impl GoObject {
    fn open(object: &ObjectFile) -> Option<GoObject> {
        let file = object.file();
        let elf_data = ReadCache::new(crate::elf::Pread::new(file));
        let elf = object::File::parse(&elf_data).ok()?;
        let mut bytes = BlockFile::with_capacity(file.try_clone().ok()?, BLOCKS_PER_TABLE);
        let layout = Layout::of(&elf, &mut bytes)?;
        let table = match Table::open(bytes, layout) {
            Ok(table) => table,
            Err(e) => {
                tracing::warn!("cannot read Go symbols of {}: {e}", object.path.display());
                return None;
            }
        };
        Some(GoObject {
            table,
            segments: crate::elf::executable_segments_of(file),
        })
    }

    fn vaddr(&self, offset: FileOffset) -> Option<u64> {
        self.segments
            .iter()
            .find(|(off, _, size)| offset.0 >= *off && offset.0 - off < *size)
            .map(|(off, vaddr, _)| vaddr + (offset.0 - off))
    }
}

/// The Go tables of the files seen, opened on first use.
#[derive(Default)]
pub(super) struct GoResolver {
    /// `None`: the file has no Go table (or an unreadable one): not tried again.
    objects: HashMap<ObjectKey, Option<GoObject>>,
}

impl GoResolver {
    /// Frames for `offset` in `object` if it is Go code; `None` sends it to the ELF resolver
    /// (not a Go binary, or the C code of a cgo binary).
    pub(super) fn frames(
        &mut self,
        object: &ObjectFile,
        offset: FileOffset,
        names: &mut HashSet<Arc<str>>,
    ) -> Option<Frames> {
        let go = self
            .objects
            .entry(object.key)
            .or_insert_with(|| GoObject::open(object))
            .as_mut()?;
        let pc = go.vaddr(offset)?;
        let index = go.table.find(pc)?;
        let func = go.table.func(index)?;
        let frames: Vec<Frame> = go
            .table
            .frames(&func, pc)
            .into_iter()
            .map(|f| Frame {
                function: intern(names, &f.function),
                file: f.file.as_deref().map(|file| intern(names, file)),
                line: f.line,
                kind: FrameKind::Go,
            })
            .collect();
        Some(Frames::from(frames))
    }

    pub(super) fn forget(&mut self, keys: &HashSet<ObjectKey>) {
        self.objects.retain(|key, _| !keys.contains(key));
    }

    /// Empties every table's block cache (what was read stays on disk, re-read on demand).
    pub(super) fn release(&mut self) {
        for go in self.objects.values_mut().flatten() {
            go.table.bytes_mut().clear();
        }
    }
}
