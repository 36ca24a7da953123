//! Where a Go table's bytes come from: memory (tests, fuzzing) or the file through a bounded
//! block cache ([`BlockFile`]), and the small read-ahead window pc-value tables are decoded from.
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Bytes per cached block of a [`BlockFile`].
pub const BLOCK_BYTES: usize = 16 * 1024;
/// Blocks a [`BlockFile`] keeps (4 MiB); past it the cache is emptied and refilled on demand.
pub const MAX_CACHED_BLOCKS: usize = 256;

/// A random-access source of bytes: the file (or a copy in memory) the table is read from.
pub trait Bytes {
    /// Fills `buf` from `offset`; `false` if any of it is out of bounds or unreadable.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> bool;
}

impl Bytes for &[u8] {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

impl<B: Bytes + ?Sized> Bytes for &mut B {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        (**self).read_at(offset, buf)
    }
}

/// A file read with `pread` through a bounded, direct-mapped cache of aligned blocks (block `i`
/// lives in slot `i % capacity`: no hashing on the lookup path, which runs for every few bytes a
/// lookup reads).
pub struct BlockFile {
    file: File,
    /// `(block index, bytes)` per slot; empty until first used.
    slots: Vec<Option<(u64, Box<[u8]>)>>,
    /// Bound on `slots`.
    capacity: usize,
    /// `pread` calls made, for benchmarks.
    pub reads: u64,
}

impl BlockFile {
    /// A cache of [`MAX_CACHED_BLOCKS`] blocks.
    pub fn new(file: File) -> Self {
        Self::with_capacity(file, MAX_CACHED_BLOCKS)
    }

    /// A cache of at most `blocks` blocks (at least one).
    pub fn with_capacity(file: File, blocks: usize) -> Self {
        Self {
            file,
            slots: Vec::new(),
            capacity: blocks.max(1),
            reads: 0,
        }
    }

    /// Drops every cached block.
    pub fn clear(&mut self) {
        self.slots = Vec::new();
    }

    /// Blocks held now.
    pub fn cached_blocks(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    fn block(&mut self, index: u64) -> Option<&[u8]> {
        if self.slots.is_empty() {
            self.slots.resize_with(self.capacity, || None);
        }
        let slot = (index % self.capacity as u64) as usize;
        if !matches!(&self.slots[slot], Some((i, _)) if *i == index) {
            let mut buf = vec![0; BLOCK_BYTES];
            let mut filled = 0;
            // A short read is the end of the file: keep what there is.
            while filled < buf.len() {
                self.reads += 1;
                match self.file.read_at(
                    &mut buf[filled..],
                    index * BLOCK_BYTES as u64 + filled as u64,
                ) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return None,
                }
            }
            buf.truncate(filled);
            self.slots[slot] = Some((index, buf.into_boxed_slice()));
        }
        self.slots[slot].as_ref().map(|(_, b)| &b[..])
    }
}

impl Bytes for BlockFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let (index, within) = (at / BLOCK_BYTES as u64, (at % BLOCK_BYTES as u64) as usize);
            let Some(block) = self.block(index) else {
                return false;
            };
            let Some(src) = block.get(within..) else {
                return false;
            };
            if src.is_empty() {
                return false;
            }
            let n = src.len().min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&src[..n]);
            done += n;
        }
        true
    }
}

/// The bytes of a pc-value table being decoded, read [`WINDOW_BYTES`] at a time.
pub(super) struct Window {
    buf: [u8; WINDOW_BYTES],
    /// File offset of `buf[0]`, and how much of it is filled.
    start: u64,
    len: usize,
}

const WINDOW_BYTES: usize = 128;

impl Default for Window {
    fn default() -> Self {
        Window {
            buf: [0; WINDOW_BYTES],
            start: 0,
            len: 0,
        }
    }
}

impl Window {
    pub(super) fn byte(&mut self, bytes: &mut impl Bytes, end: u64, at: u64) -> Option<u8> {
        if at < self.start || at - self.start >= self.len as u64 {
            if at >= end {
                return None;
            }
            let n = (end - at).min(WINDOW_BYTES as u64) as usize;
            if !bytes.read_at(at, &mut self.buf[..n]) {
                return None;
            }
            self.start = at;
            self.len = n;
        }
        Some(self.buf[(at - self.start) as usize])
    }

    /// An unsigned LEB128 varint of at most 32 bits at `at`, and its length.
    pub(super) fn varint(
        &mut self,
        bytes: &mut impl Bytes,
        end: u64,
        at: u64,
    ) -> Option<(u32, u64)> {
        let mut result: u32 = 0;
        for i in 0..5u64 {
            let b = self.byte(bytes, end, at + i)?;
            result |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
            if b & 0x80 == 0 {
                return Some((result, i + 1));
            }
        }
        None
    }
}
