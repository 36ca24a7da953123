//! On-disk cache of unwind tables, one file per object, keyed by build id (or by
//! `dev-inode-size-mtime` for objects without one), so that an object's CFI is parsed once per
//! node rather than once per process that maps it, and survives agent restarts.
//!
//! A file is a fixed header followed by the rows exactly as [`UnwindRow`] lies in memory, so a
//! table is used straight from its mapping ([`CachedTable::rows`]) without copying. Files are
//! written to a temporary file in the directory and renamed into place: a file at its final name
//! is complete and never modified again (a hit only touches its mtime), so a mapping never sees
//! its contents change. Anything that fails validation (truncated, corrupt, another format
//! version, written on a host of the other byte order) is rebuilt, never trusted.
//!
//! The directory is bounded: after each write the least recently used tables (by mtime, which a
//! hit refreshes) are deleted until the `.rows` files fit `max_bytes` again.
//!
//! The directory is private to the agent ([`PrivateDir`]): created 0700, never reached through a
//! symbolic link, refused when another user owns it or may write to it, and every table file is
//! opened without following links and used only when this uid owns it. So the tables mapped
//! here are files only this agent writes, and only by rename (never truncated in place).
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use memmap2::Mmap;
use profiler_common::unwind::{UnwindRow, arch, kind};

use super::private_dir::PrivateDir;
use super::table::{TableError, TableInfo, build_rows, build_rows_from_file, map_file};

/// Bumped whenever the file layout or the meaning of rows changes; other versions are rebuilt.
pub const FORMAT_VERSION: u32 = 2;

/// Longest key accepted: build ids are 40 hex digits, `dev-inode-size-mtime` about 60 characters.
pub const MAX_KEY_LEN: usize = 128;

const MAGIC: [u8; 8] = *b"KLPSROWS";
/// Written in the host's byte order: a file from a host of the other order does not match.
const BYTE_ORDER_TAG: u32 = 0x0102_0304;
const EXTENSION: &str = "rows";
const TEMP_PREFIX: &str = ".build-";
/// Temporary files older than this are left over from a crashed build and deleted.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// Bytes before the first row. A multiple of the rows' alignment, so that rows in a (page
/// aligned) mapping are aligned.
const HEADER_BYTES: usize = 128;
const ROW_BYTES: usize = std::mem::size_of::<UnwindRow>();
const _: () = assert!(HEADER_BYTES.is_multiple_of(std::mem::align_of::<UnwindRow>()));
const _: () = assert!(ROW_BYTES == 12);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    #[error("cannot create the unwind table cache directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "invalid unwind table cache key `{0}`: expected a build id or dev-inode-size-mtime of at \
         most {MAX_KEY_LEN} characters"
    )]
    InvalidKey(String),
    #[error("cannot write the unwind table {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "refusing the unwind table cache directory {}: {reason}; remove it, or choose another \
         directory with --unwind-cache-dir",
        path.display()
    )]
    NotPrivate { path: PathBuf, reason: NotPrivate },
    #[error(transparent)]
    Table(#[from] TableError),
}

/// Why a cache directory is not private to this agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotPrivate {
    #[error("it is a symbolic link (links are never followed there)")]
    Symlink,
    #[error("it is not a directory")]
    NotADirectory,
    #[error(
        "it is owned by uid {owner}, not by this agent's uid {uid}: its owner could plant or \
         replace tables"
    )]
    Owner { owner: u32, uid: u32 },
    #[error(
        "other users may write to it (mode {mode:o}) and it is not empty: they could plant or \
         replace tables"
    )]
    Writable { mode: u32 },
}

/// Counters since the cache was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Tables used from disk.
    pub hits: u64,
    /// Tables built (missing or invalid on disk).
    pub builds: u64,
    /// Builds that replaced an invalid file.
    pub invalid: u64,
    /// Files deleted to keep the directory under its bound.
    pub evictions: u64,
}

/// A directory of unwind tables bounded to `max_bytes` of `.rows` files.
#[derive(Debug)]
pub struct TableCache {
    dir: PrivateDir,
    max_bytes: u64,
    hits: AtomicU64,
    builds: AtomicU64,
    invalid: AtomicU64,
    evictions: AtomicU64,
}

impl TableCache {
    /// Opens (creating it, mode 0700, if needed) the private cache directory `dir`; see
    /// [`PrivateDir::open`] for what is refused.
    pub fn new(dir: PathBuf, max_bytes: u64) -> Result<Self, CacheError> {
        Ok(Self {
            dir: PrivateDir::open(&dir)?,
            max_bytes,
            hits: AtomicU64::new(0),
            builds: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            builds: self.builds.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// The table of an object from the cache, built from the ELF bytes `elf` when missing or
    /// invalid. `key` names the object: its build id in hex, or `dev-inode-size-mtime` for one
    /// without (at most [`MAX_KEY_LEN`] characters; others than `[0-9a-zA-Z_-]` become `_`).
    pub fn get_or_build(&self, key: &str, elf: &[u8]) -> Result<CachedTable, CacheError> {
        self.get_or_else(key, |sink| build_rows(elf, &mut |row| sink(row)))
    }

    /// Like [`get_or_build`](Self::get_or_build) from an open ELF file, which is mapped (not
    /// read into the heap) and only when the table is missing.
    pub fn get_or_build_file(&self, key: &str, elf: &File) -> Result<CachedTable, CacheError> {
        self.get_or_else(key, |sink| build_rows_from_file(elf, &mut |row| sink(row)))
    }

    /// The table of `key` if the cache holds a valid one (never builds).
    pub fn get(&self, key: &str) -> Option<CachedTable> {
        let file = self.dir.open_file(&file_name(key).ok()?).ok()??;
        let table = CachedTable::from_file(&file)?;
        // Best effort: a failed touch only makes the table look older to eviction.
        let _ = file.set_modified(SystemTime::now());
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(table)
    }

    /// Path of the table of `key` (for messages and tests: the cache itself never goes through
    /// it).
    pub fn path(&self, key: &str) -> Result<PathBuf, CacheError> {
        Ok(self.dir.path().join(file_name(key)?))
    }

    fn get_or_else(
        &self,
        key: &str,
        build: impl FnOnce(&mut dyn FnMut(UnwindRow)) -> Result<TableInfo, TableError>,
    ) -> Result<CachedTable, CacheError> {
        let name = file_name(key)?;
        match self.dir.open_file(&name) {
            Ok(Some(file)) => {
                if let Some(table) = CachedTable::from_file(&file) {
                    // Best effort: a failed touch only makes the table look older to eviction.
                    let _ = file.set_modified(SystemTime::now());
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(table);
                }
                self.invalid.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {}
            // A link, not a regular file, another user's, unreadable: rebuilding replaces it
            // (the rename replaces the name, never what a link points to), or fails to write
            // with a clear error.
            Err(_) => {
                self.invalid.fetch_add(1, Ordering::Relaxed);
            }
        }
        let table = self.build(&name, build)?;
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.evict(&name);
        Ok(table)
    }

    /// Streams the rows into a temporary file, writes the header last and renames it into place.
    fn build(
        &self,
        name: &str,
        build: impl FnOnce(&mut dyn FnMut(UnwindRow)) -> Result<TableInfo, TableError>,
    ) -> Result<CachedTable, CacheError> {
        let write_error = |source| CacheError::Write {
            path: self.dir.path().join(name),
            source,
        };
        let (mut file, temp) = self.dir.create_temp(TEMP_PREFIX).map_err(write_error)?;
        let written = (|| {
            let info = {
                let mut out = BufWriter::new(&mut file);
                out.write_all(&[0; HEADER_BYTES]).map_err(write_error)?;
                let mut failed = None;
                let info = build(&mut |row| {
                    if failed.is_none()
                        && let Err(e) = out.write_all(&encode_row(&row))
                    {
                        failed = Some(e);
                    }
                })?;
                if let Some(e) = failed {
                    return Err(write_error(e));
                }
                out.flush().map_err(write_error)?;
                info
            };
            file.seek(SeekFrom::Start(0)).map_err(write_error)?;
            file.write_all(&encode_header(&info)).map_err(write_error)?;
            // No fsync: a file cut short by a crash fails validation and is rebuilt.
            self.dir.rename(&temp, name).map_err(write_error)
        })();
        if let Err(e) = written {
            if let Ok(temp) = std::ffi::CString::new(temp) {
                let _ = self.dir.remove(&temp);
            }
            return Err(e);
        }
        CachedTable::from_file(&file).ok_or_else(|| {
            write_error(io::Error::new(
                io::ErrorKind::InvalidData,
                "the table just written does not read back",
            ))
        })
    }

    /// Deletes the least recently used tables (never `keep`) until the directory fits the bound,
    /// and temporary files left by crashed builds. Best effort: errors leave files in place.
    fn evict(&self, keep: &str) {
        let Ok(entries) = self.dir.entries() else {
            return;
        };
        let now = SystemTime::now();
        let mut tables = Vec::new();
        for entry in entries {
            let name = entry.name_str().to_string_lossy();
            if name.starts_with(TEMP_PREFIX) {
                let age = now.duration_since(entry.modified).unwrap_or_default();
                if age > STALE_TEMP_AGE {
                    let _ = self.dir.remove(&entry.name);
                }
            } else if entry.is_file && name.ends_with(&format!(".{EXTENSION}")) {
                tables.push((entry.modified, entry.len, entry.name));
            }
        }
        let mut total: u64 = tables.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        tables.sort();
        for (_, len, name) in tables {
            if total <= self.max_bytes {
                break;
            }
            if name.as_bytes() != keep.as_bytes() && self.dir.remove(&name).is_ok() {
                total = total.saturating_sub(len);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The file name of `key`'s table.
fn file_name(key: &str) -> Result<String, CacheError> {
    Ok(format!("{}.{EXTENSION}", file_stem(key)?))
}

/// The file name of `key`: characters other than `[0-9a-zA-Z_-]` become `_`, so a key can never
/// name a path outside the directory (or a hidden temporary file).
fn file_stem(key: &str) -> Result<String, CacheError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(CacheError::InvalidKey(
            key.chars().take(MAX_KEY_LEN).collect(),
        ));
    }
    Ok(key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect())
}

/// A table on disk, mapped.
#[derive(Debug)]
pub struct CachedTable {
    map: Mmap,
    info: TableInfo,
    len: usize,
}

impl CachedTable {
    /// One of [`arch`].
    pub fn arch(&self) -> u32 {
        self.info.arch
    }

    /// The counters of the build that wrote this table.
    pub fn info(&self) -> &TableInfo {
        &self.info
    }

    /// The rows, straight from the mapping.
    pub fn rows(&self) -> &[UnwindRow] {
        let bytes = self.map.get(HEADER_BYTES..).unwrap_or_default();
        // Checked in `from_file`; checked again so this function stands on its own.
        if bytes.len() != self.len * ROW_BYTES
            || bytes
                .as_ptr()
                .align_offset(std::mem::align_of::<UnwindRow>())
                != 0
        {
            return &[];
        }
        // SAFETY: `bytes` holds exactly `len` rows' worth of bytes, at an address aligned for
        // `UnwindRow` (both checked above). `UnwindRow` is `repr(C)`, 12 bytes of integers with
        // no implicit padding, so every bit pattern is a valid value, and the file wrote each
        // field in the host's byte order (the header's tag checks it). The slice borrows `self`,
        // which owns the mapping, and the file behind it is never modified (module docs).
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<UnwindRow>(), self.len) }
    }

    /// Maps and validates a table file; `None` when it is not a complete table of this format.
    fn from_file(file: &File) -> Option<Self> {
        let file_len = file.metadata().ok()?.len();
        if file_len < HEADER_BYTES as u64 {
            return None;
        }
        // Mapping this file is safe from SIGBUS: it sits in a directory only this agent can
        // write and this uid owns it (checked on open), and table files are never modified
        // once at their final name (module docs), only replaced by rename or unlinked, which
        // leaves this mapping's inode intact. No other process can truncate it under us.
        let map = map_file(file).ok()?;
        let (info, len) = decode_header(map.get(..HEADER_BYTES)?)?;
        if map.len().checked_sub(HEADER_BYTES)? != len.checked_mul(ROW_BYTES)? {
            return None;
        }
        let table = Self { map, info, len };
        let rows = table.rows();
        let valid = rows.len() == len
            && rows.iter().all(|r| r.kind <= kind::LAST && r._pad == 0)
            && rows.windows(2).all(|w| w[0].pc < w[1].pc);
        valid.then_some(table)
    }
}

fn encode_row(row: &UnwindRow) -> [u8; ROW_BYTES] {
    // The `repr(C)` layout of `UnwindRow`: pc @0, kind @4, _pad @5, cfa @6, fp @8, ra @10.
    let mut b = [0; ROW_BYTES];
    b[0..4].copy_from_slice(&row.pc.to_ne_bytes());
    b[4] = row.kind;
    b[5] = row._pad;
    b[6..8].copy_from_slice(&row.cfa_offset.to_ne_bytes());
    b[8..10].copy_from_slice(&row.fp_offset.to_ne_bytes());
    b[10..12].copy_from_slice(&row.ra_offset.to_ne_bytes());
    b
}

/// The [`TableInfo`] counters in header order (after the arch).
fn info_counters(info: &TableInfo) -> [u64; 11] {
    [
        info.fdes,
        info.rows,
        info.unsupported_rows,
        info.offset_overflows,
        info.skipped_fdes,
        info.overlapping_fdes,
        info.cfi_errors,
        info.eh_frame_bytes,
        info.debug_frame_bytes,
        info.go_functions,
        info.go_errors,
    ]
}

/// Header: magic, version, byte-order tag, arch, row size (u32s), row count (u64), the
/// [`TableInfo`] counters (u64s), zeros up to [`HEADER_BYTES`]; all in the host's byte order.
fn encode_header(info: &TableInfo) -> [u8; HEADER_BYTES] {
    let mut words = Vec::with_capacity(HEADER_BYTES);
    words.extend_from_slice(&MAGIC);
    for word in [FORMAT_VERSION, BYTE_ORDER_TAG, info.arch, ROW_BYTES as u32] {
        words.extend_from_slice(&word.to_ne_bytes());
    }
    words.extend_from_slice(&info.rows.to_ne_bytes());
    for counter in info_counters(info) {
        words.extend_from_slice(&counter.to_ne_bytes());
    }
    let mut header = [0; HEADER_BYTES];
    header[..words.len()].copy_from_slice(&words);
    header
}

/// The table's info and row count, when `header` is one this version wrote.
fn decode_header(header: &[u8]) -> Option<(TableInfo, usize)> {
    let mut fields = header.get(MAGIC.len()..)?.chunks_exact(4);
    let mut u32_field = || Some(u32::from_ne_bytes(fields.next()?.try_into().ok()?));
    let (version, tag, arch, row_bytes) = (u32_field()?, u32_field()?, u32_field()?, u32_field()?);
    if header.get(..MAGIC.len())? != MAGIC
        || version != FORMAT_VERSION
        || tag != BYTE_ORDER_TAG
        || !(arch == arch::X86_64 || arch == arch::AARCH64)
        || row_bytes as usize != ROW_BYTES
    {
        return None;
    }
    let mut words = header
        .get(MAGIC.len() + 16..)?
        .chunks_exact(8)
        .map(|w| w.try_into().map(u64::from_ne_bytes));
    let mut next = || words.next()?.ok();
    let count = next()?;
    let info = TableInfo {
        arch,
        fdes: next()?,
        rows: next()?,
        unsupported_rows: next()?,
        offset_overflows: next()?,
        skipped_fdes: next()?,
        overlapping_fdes: next()?,
        cfi_errors: next()?,
        eh_frame_bytes: next()?,
        debug_frame_bytes: next()?,
        go_functions: next()?,
        go_errors: next()?,
    };
    if info.rows != count {
        return None;
    }
    Some((info, usize::try_from(count).ok()?))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::unwind::table::build_table;
    use crate::unwind::table::tests::libc_path;

    fn libc() -> Vec<u8> {
        fs::read(libc_path()).unwrap()
    }

    fn cache(max_bytes: u64) -> (tempfile::TempDir, TableCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = TableCache::new(dir.path().join("unwind"), max_bytes).unwrap();
        (dir, cache)
    }

    fn set_age(path: &Path, age: Duration) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn second_lookup_maps_the_file_without_rebuilding() {
        let (_dir, cache) = cache(u64::MAX);
        let elf = libc();
        let expected = build_table(&elf).unwrap();
        let built = cache.get_or_build("3f2a", &elf).unwrap();
        assert_eq!(built.rows(), &expected.rows[..]);
        assert_eq!(built.arch(), expected.arch);
        assert_eq!(*built.info(), expected.info);
        let path = cache.path("3f2a").unwrap();
        let inode = fs::metadata(&path).unwrap().ino();

        // Not even an ELF file: a hit never looks at the object.
        let hit = cache.get_or_build("3f2a", b"not an ELF file").unwrap();
        assert_eq!(hit.rows(), &expected.rows[..]);
        assert_eq!(*hit.info(), expected.info);
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        let stats = cache.stats();
        assert_eq!((stats.builds, stats.hits, stats.invalid), (1, 1, 0));
    }

    #[test]
    fn builds_from_an_open_file() {
        let (_dir, cache) = cache(u64::MAX);
        let expected = build_table(&libc()).unwrap();
        let file = File::open(libc_path()).unwrap();
        let table = cache
            .get_or_build_file("8-1234-4096-1700000000", &file)
            .unwrap();
        assert_eq!(table.rows(), &expected.rows[..]);
        let table = cache
            .get_or_build_file("8-1234-4096-1700000000", &file)
            .unwrap();
        assert_eq!(table.rows(), &expected.rows[..]);
        assert_eq!((cache.stats().builds, cache.stats().hits), (1, 1));
    }

    #[test]
    fn corrupt_or_truncated_files_are_rebuilt() {
        let (_dir, cache) = cache(u64::MAX);
        let elf = libc();
        let expected = build_table(&elf).unwrap();
        drop(cache.get_or_build("k", &elf).unwrap());
        let path = cache.path("k").unwrap();
        let good = fs::read(&path).unwrap();
        const ROW_3: usize = HEADER_BYTES + 3 * ROW_BYTES;
        const ROW_5: usize = HEADER_BYTES + 5 * ROW_BYTES;
        type Corrupt = fn(&mut Vec<u8>);
        let corruptions: [(&str, Corrupt); 9] = [
            ("magic", |f| f[0] ^= 1),
            ("version", |f| f[8] = f[8].wrapping_add(1)),
            ("arch", |f| f[16] = 7),
            ("row count", |f| f[24] ^= 1),
            ("truncated", |f| f.truncate(f.len() - 1)),
            ("header only", |f| f.truncate(HEADER_BYTES - 1)),
            ("empty", |f| f.clear()),
            ("row kind", |f| f[ROW_3 + 4] = 99),
            ("row order", |f| f[ROW_5..ROW_5 + 4].fill(0)),
        ];
        for (n, (what, corrupt)) in corruptions.iter().enumerate() {
            let mut bytes = good.clone();
            corrupt(&mut bytes);
            // Written in place: only safe because no mapping of the file is alive.
            fs::write(&path, &bytes).unwrap();
            let table = cache.get_or_build("k", &elf).unwrap();
            assert_eq!(table.rows(), &expected.rows[..], "{what}");
            assert_eq!(cache.stats().invalid, n as u64 + 1, "{what}");
            drop(table);
            assert_eq!(fs::read(&path).unwrap(), good, "{what}");
        }
    }

    #[test]
    fn eviction_deletes_the_least_recently_used_tables() {
        let (_dir, probe) = cache(u64::MAX);
        let elf = libc();
        drop(probe.get_or_build("probe", &elf).unwrap());
        let size = fs::metadata(probe.path("probe").unwrap()).unwrap().len();

        // Room for two tables and a half.
        let (_dir, cache) = cache(size * 5 / 2);
        let path = |key| cache.path(key).unwrap();
        drop(cache.get_or_build("a", &elf).unwrap());
        set_age(&path("a"), Duration::from_secs(300));
        drop(cache.get_or_build("b", &elf).unwrap());
        set_age(&path("b"), Duration::from_secs(200));
        drop(cache.get_or_build("c", &elf).unwrap());
        assert!(!path("a").exists(), "the oldest goes first");
        assert!(path("b").exists() && path("c").exists());
        set_age(&path("c"), Duration::from_secs(100));

        // A hit makes b the most recently used: c goes next.
        drop(cache.get_or_build("b", &elf).unwrap());
        drop(cache.get_or_build("d", &elf).unwrap());
        assert!(!path("c").exists());
        assert!(path("b").exists() && path("d").exists());
        assert_eq!(cache.stats().evictions, 2);
        let total: u64 = fs::read_dir(cache.dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= size * 5 / 2, "{total}");
    }

    #[test]
    fn the_table_just_written_stays_even_over_the_bound() {
        let (_dir, cache) = cache(1);
        let table = cache.get_or_build("big", &libc()).unwrap();
        assert!(cache.path("big").unwrap().exists());
        assert!(!table.rows().is_empty());
        assert_eq!(cache.stats().evictions, 0);
    }

    #[test]
    fn keys_become_file_names_inside_the_directory() {
        let (_dir, cache) = cache(u64::MAX);
        let name = |key| {
            cache
                .path(key)
                .unwrap()
                .strip_prefix(cache.dir.path())
                .unwrap()
                .to_owned()
        };
        assert_eq!(name("../etc/passwd"), Path::new("___etc_passwd.rows"));
        assert_eq!(name(".hidden"), Path::new("_hidden.rows"));
        assert_eq!(
            name("8-1234-4096-1700000000"),
            Path::new("8-1234-4096-1700000000.rows")
        );
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(name(id), Path::new(&format!("{id}.rows")));
        assert!(matches!(cache.path(""), Err(CacheError::InvalidKey(_))));
        let long = "a".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(cache.path(&long), Err(CacheError::InvalidKey(_))));
    }

    #[test]
    fn unusable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, b"").unwrap();
        let err = TableCache::new(file.join("unwind"), 1).unwrap_err();
        assert!(matches!(err, CacheError::CreateDir { .. }), "{err}");
    }

    /// As root, `chown` a path to `nobody`; `false` when not root (the check is skipped).
    fn give_to_nobody(path: &Path) -> bool {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to chown");
            return false;
        }
        std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
        true
    }

    #[test]
    fn a_symlink_at_the_cache_path_is_refused_and_nothing_is_written_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir(&victim).unwrap();
        let link = dir.path().join("kalypso-unwind-tables");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = TableCache::new(link.clone(), u64::MAX).unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::NotPrivate {
                    reason: NotPrivate::Symlink,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0);
    }

    #[test]
    fn the_cache_directory_and_its_missing_parents_are_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/unwind");
        let cache = TableCache::new(path.clone(), u64::MAX).unwrap();
        drop(cache.get_or_build("k", &libc()).unwrap());
        for p in [dir.path().join("a"), dir.path().join("a/b"), path.clone()] {
            let mode = fs::metadata(&p).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", p.display());
        }
        let mode = fs::metadata(cache.path("k").unwrap()).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "table file mode {mode:o}");
    }

    #[test]
    fn a_directory_others_may_write_is_refused_unless_empty() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("someone-elses"), b"").unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let err = TableCache::new(shared.clone(), u64::MAX).unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::NotPrivate {
                    reason: NotPrivate::Writable { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(fs::metadata(&shared).unwrap().mode() & 0o777, 0o777);
        // A fresh volume (an empty emptyDir is 0777): made private, then used.
        let fresh = dir.path().join("fresh");
        fs::create_dir(&fresh).unwrap();
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o777)).unwrap();
        TableCache::new(fresh.clone(), u64::MAX).unwrap();
        assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        fs::create_dir(&theirs).unwrap();
        if !give_to_nobody(&theirs) {
            return;
        }
        let err = TableCache::new(theirs, u64::MAX).unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::NotPrivate {
                    reason: NotPrivate::Owner { owner: 65534, .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn tables_another_user_owns_or_links_are_never_read() {
        let (dir, cache) = cache(u64::MAX);
        let elf = libc();
        let expected = build_table(&elf).unwrap();
        drop(cache.get_or_build("planted", &elf).unwrap());
        let path = cache.path("planted").unwrap();
        // A valid table, but not this agent's: rebuilt (replaced), never used.
        if give_to_nobody(&path) {
            assert!(cache.get("planted").is_none());
            let table = cache.get_or_build("planted", &elf).unwrap();
            assert_eq!(table.rows(), &expected.rows[..]);
            assert_eq!(fs::metadata(&path).unwrap().uid(), 0);
        }
        // A link to a valid table elsewhere is not followed.
        let elsewhere = dir.path().join("elsewhere.rows");
        fs::rename(&path, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(cache.get("planted").is_none());
        let table = cache.get_or_build("planted", &elf).unwrap();
        assert_eq!(table.rows(), &expected.rows[..]);
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(
            cache.stats().invalid,
            1 + u64::from(rustix::process::geteuid().is_root())
        );
    }

    #[test]
    fn header_round_trips_every_counter() {
        let info = TableInfo {
            arch: arch::AARCH64,
            fdes: 1,
            rows: 2,
            unsupported_rows: 3,
            offset_overflows: 4,
            skipped_fdes: 5,
            overlapping_fdes: 6,
            cfi_errors: 7,
            eh_frame_bytes: 8,
            debug_frame_bytes: 9,
            go_functions: 10,
            go_errors: 11,
        };
        assert_eq!(decode_header(&encode_header(&info)), Some((info, 2)));
    }
}
