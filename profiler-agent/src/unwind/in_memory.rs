//! The unwinder's maps held in memory: what the loader would write to the kernel, for replay and
//! tests, with the row lookup the BPF program does.
use std::collections::HashMap;

use profiler_common::unwind::{
    self, PageExtent, PageKey, ProcessMappings, TABLE_PAGE_BYTES, TABLE_PAGE_SHIFT, UnwindRow,
};
use profiler_common::{RowChunk, UNWIND_CHUNK_ROWS};

use crate::types::Pid;
use crate::unwind::loader::UnwindMaps;

/// In-memory [`UnwindMaps`], for tests and replay: what the kernel would hold.
#[derive(Default)]
pub struct InMemoryMaps {
    pub chunks: HashMap<u32, RowChunk>,
    pub pages: HashMap<PageKey, PageExtent>,
    pub processes: HashMap<Pid, ProcessMappings>,
}

impl InMemoryMaps {
    /// The row the kernel would find for an object address, as the BPF program looks it up.
    pub fn lookup_row(&self, table_id: u32, vaddr: u64) -> Option<UnwindRow> {
        let vaddr = u32::try_from(vaddr).ok()?;
        let extent = self.pages.get(&PageKey {
            table_id,
            page: vaddr >> TABLE_PAGE_SHIFT,
        })?;
        // As the BPF program reads them: packed rows, unpacked at the page's address.
        let page_start = vaddr & !(TABLE_PAGE_BYTES as u32 - 1);
        let row_at = |i: u32| {
            let index = extent.start + i;
            self.chunks
                .get(&(index / UNWIND_CHUNK_ROWS))
                .map(|c| c.rows[(index % UNWIND_CHUNK_ROWS) as usize].unpack(page_start))
        };
        let i = unwind::find_row(
            extent.len,
            vaddr,
            &mut |i| row_at(i).map(|r| r.pc),
            &mut unwind::Identity,
        )?;
        row_at(i)
    }
}

impl UnwindMaps for InMemoryMaps {
    fn write_chunk(&mut self, index: u32, chunk: &RowChunk) -> Result<(), String> {
        self.chunks.insert(index, *chunk);
        Ok(())
    }
    fn set_page(&mut self, key: PageKey, extent: PageExtent) -> Result<(), String> {
        self.pages.insert(key, extent);
        Ok(())
    }
    fn remove_page(&mut self, key: PageKey) {
        self.pages.remove(&key);
    }
    fn set_process(&mut self, pid: Pid, mappings: &ProcessMappings) -> Result<(), String> {
        self.processes.insert(pid, *mappings);
        Ok(())
    }
    fn remove_process(&mut self, pid: Pid) {
        self.processes.remove(&pid);
    }
}
