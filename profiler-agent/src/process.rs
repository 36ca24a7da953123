//! What the agent knows about each sampled process: its executable mappings and the ELF files
//! behind them. Files are opened while the process lives and kept open, so samples of a process that
//! has exited, of a binary deleted after start, or of a file inside a container's mount namespace
//! still symbolize.
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use procfs::process::Process;

use crate::maps::{self, MapPath};
use crate::types::{BuildId, FileOffset, Pid, VirtAddr};

/// Bound on open ELF files kept for symbolization. Files no live process maps are closed first.
pub const MAX_OPEN_OBJECTS: usize = 2048;
/// Bound on processes whose mappings are remembered (live and recently exited).
pub const MAX_PROCESSES: usize = 16_384;

/// Identity of a file on disk: (device, inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub dev: (i32, i32),
    pub inode: u64,
}

/// An ELF file mapped by some process, held open.
#[derive(Debug)]
pub struct ObjectFile {
    pub key: ObjectKey,
    /// The path as the process sees it (what users recognise), without " (deleted)".
    pub path: PathBuf,
    /// A path that reaches the open file from this process, whatever happens to the original.
    pub open_path: PathBuf,
    pub build_id: Option<BuildId>,
    /// The Go linker's build id, for Go binaries.
    pub go_build_id: Option<String>,
    /// A separate debug file for it, by build id or `.gnu_debuglink` (see [`crate::debuginfo`]).
    pub debug: Option<crate::debuginfo::DebugFile>,
    file: File,
}

impl ObjectFile {
    /// The open file (it stays readable after the process exits or the path is deleted).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file name alone, for display.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

/// One executable mapping of a process.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: VirtAddr,
    pub end: VirtAddr,
    /// File offset of `start`.
    pub offset: FileOffset,
    /// The file, or `None` for anonymous/special mappings (JIT code, vdso) shown by `label`.
    pub object: Option<Arc<ObjectFile>>,
    pub label: String,
}

impl Mapping {
    /// The file offset of an address in this mapping; `None` outside it.
    pub fn file_offset(&self, addr: VirtAddr) -> Option<FileOffset> {
        if addr < self.start || addr >= self.end {
            return None;
        }
        (addr.0 - self.start.0)
            .checked_add(self.offset.0)
            .map(FileOffset)
    }
}

/// A process as last seen.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub pid: Option<Pid>,
    /// `comm` (the thread-group leader's name).
    pub comm: String,
    pub exe: Option<PathBuf>,
    pub cmdline: Vec<String>,
    /// Sorted by start address, non-overlapping.
    pub mappings: Vec<Mapping>,
    pub alive: bool,
    /// `starttime` from `/proc/PID/stat`: tells a recycled pid from the process first seen.
    pub start_time: u64,
    /// When the mappings were read.
    pub read_at: Option<Instant>,
}

impl ProcessInfo {
    pub fn mapping(&self, addr: VirtAddr) -> Option<&Mapping> {
        let idx = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(idx.checked_sub(1)?)?;
        (addr < m.end).then_some(m)
    }

    /// The executable's file name, else `comm`.
    pub fn name(&self) -> String {
        self.exe
            .as_deref()
            .and_then(Path::file_name)
            .map_or_else(|| self.comm.clone(), |n| n.to_string_lossy().into_owned())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no process with pid {0}")]
    NoSuchProcess(Pid),
    #[error(
        "cannot read /proc/{pid}/maps: {message} (needs CAP_SYS_PTRACE for other users' processes)"
    )]
    Maps { pid: Pid, message: String },
}

/// What [`ProcessTable::forget_exited`] let go of.
#[derive(Debug, Default)]
pub struct Forgotten {
    pub pids: Vec<Pid>,
    pub objects: Vec<Arc<ObjectFile>>,
}

/// Live and recently exited processes with their mappings, and the files they map.
#[derive(Default)]
pub struct ProcessTable {
    processes: HashMap<Pid, ProcessInfo>,
    objects: HashMap<ObjectKey, Arc<ObjectFile>>,
    /// Files that could not be opened or parsed (counted, not retried every tick).
    pub object_errors: u64,
    /// Of those, files refused for lack of privilege (CAP_SYS_PTRACE to read other users' and
    /// other root processes' mapped files).
    pub object_denied: u64,
    /// Lines of `/proc/PID/maps` that did not parse (skipped).
    pub maps_lines_skipped: u64,
    /// Files let go of to stay within bounds, handed out by the next `forget_exited` so the
    /// symbolizer can release what it cached for them.
    released: Vec<Arc<ObjectFile>>,
    /// Processes marked exited since the last [`ProcessTable::take_exited`].
    exited: Vec<Pid>,
}

impl ProcessTable {
    pub fn get(&self, pid: Pid) -> Option<&ProcessInfo> {
        self.processes.get(&pid)
    }

    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn open_objects(&self) -> usize {
        self.objects.len()
    }

    /// A process as if read from `/proc` (tests of the stages after this one).
    #[cfg(test)]
    pub(crate) fn insert_for_test(&mut self, info: ProcessInfo) {
        self.processes.insert(info.pid.expect("a pid"), info);
    }

    /// Re-reads a process's mappings, opening files not seen before. A process that has gone
    /// keeps its last mappings and is marked dead.
    pub fn refresh(&mut self, pid: Pid) -> Result<(), ProcessError> {
        let proc = match Process::new(pid.0 as i32) {
            Ok(p) if exists(pid) => p,
            _ => {
                self.mark_exited(pid);
                return Err(ProcessError::NoSuchProcess(pid));
            }
        };
        let text = match std::fs::read_to_string(format!("/proc/{}/maps", pid.0)) {
            Ok(t) => t,
            Err(_) if !exists(pid) => {
                self.mark_exited(pid);
                return Err(ProcessError::NoSuchProcess(pid));
            }
            Err(e) => {
                return Err(ProcessError::Maps {
                    pid,
                    message: e.to_string(),
                });
            }
        };
        let (entries, bad) = maps::parse(&text);
        self.maps_lines_skipped += bad as u64;
        let mut mappings = Vec::new();
        for map in entries {
            if !map.executable {
                continue;
            }
            let (start, end) = (map.start, map.end);
            let (object, label) = match &map.path {
                MapPath::File(path) if map.inode != 0 => {
                    let key = ObjectKey {
                        dev: map.dev,
                        inode: map.inode,
                    };
                    let path = Path::new(path);
                    let object = self.object(pid, key, path, start, end);
                    (object, clean_path(path).display().to_string())
                }
                MapPath::Special(path) if path == VDSO => (vdso(end - start), path.clone()),
                MapPath::File(path) | MapPath::Special(path) => (None, path.clone()),
                MapPath::Anonymous => (None, "[anon]".to_string()),
            };
            mappings.push(Mapping {
                start: VirtAddr(start),
                end: VirtAddr(end),
                offset: FileOffset(map.offset),
                object,
                label,
            });
        }
        mappings.sort_by_key(|m| m.start);
        // A process that exits while its maps are read shows an empty or truncated map: keep
        // what we had if we had anything (the new read is incomplete), else take what we got.
        if !exists(pid) && (mappings.is_empty() || self.processes.contains_key(&pid)) {
            self.mark_exited(pid);
            return Err(ProcessError::NoSuchProcess(pid));
        }
        let (comm, start_time) = proc
            .stat()
            .map(|s| (s.comm, s.starttime))
            .unwrap_or_default();
        let info = ProcessInfo {
            pid: Some(pid),
            comm,
            exe: proc.exe().ok().map(|p| clean_path(&p)),
            cmdline: proc.cmdline().unwrap_or_default(),
            mappings,
            alive: true,
            start_time,
            read_at: Some(Instant::now()),
        };
        self.processes.insert(pid, info);
        self.enforce_bounds();
        Ok(())
    }

    /// A copy holding only `pids`, sharing their open files: what symbolizing one window on
    /// another thread needs.
    pub fn subset(&self, pids: impl IntoIterator<Item = Pid>) -> ProcessTable {
        let processes: HashMap<Pid, ProcessInfo> = pids
            .into_iter()
            .filter_map(|pid| Some((pid, self.processes.get(&pid)?.clone())))
            .collect();
        ProcessTable {
            processes,
            ..ProcessTable::default()
        }
    }

    /// Checks every live process: gone, or its pid recycled → marked exited; executed another
    /// program → mappings read again. Returns the pids whose mappings were read. Mappings are
    /// otherwise read when a process is first seen and when its samples fall outside them, so
    /// this is how a quiet process's exit is noticed (one `stat` and one `readlink` each).
    pub fn revalidate(&mut self) -> Vec<Pid> {
        let mut reread = Vec::new();
        let live: Vec<(Pid, u64, Option<PathBuf>)> = self
            .processes
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(pid, p)| (*pid, p.start_time, p.exe.clone()))
            .collect();
        for (pid, start_time, exe) in live {
            let Ok(proc) = Process::new(pid.0 as i32) else {
                self.mark_exited(pid);
                continue;
            };
            match proc.stat() {
                Ok(stat)
                    if !matches!(stat.state, 'Z' | 'X' | 'x') && stat.starttime == start_time =>
                {
                    if proc.exe().ok().map(|p| clean_path(&p)) != exe && self.refresh(pid).is_ok() {
                        reread.push(pid);
                    }
                }
                _ => self.mark_exited(pid),
            }
        }
        reread
    }

    fn mark_exited(&mut self, pid: Pid) {
        if let Some(info) = self.processes.get_mut(&pid)
            && info.alive
        {
            info.alive = false;
            self.exited.push(pid);
        }
    }

    /// Processes found exited since the last call. They stay in the table, mappings and all,
    /// for their samples to symbolize; what only serves live processes (unwind tables in the
    /// kernel, the announced set) can go.
    pub fn take_exited(&mut self) -> Vec<Pid> {
        let mut exited = std::mem::take(&mut self.exited);
        // Exited and then seen again: a new process under a reused pid.
        exited.retain(|pid| self.processes.get(pid).is_some_and(|p| !p.alive));
        exited
    }

    /// Forgets processes that have exited (after their last samples were symbolized). Returns
    /// their pids and the files no live process maps any more (closed once the caller drops them).
    pub fn forget_exited(&mut self) -> Forgotten {
        let pids: Vec<Pid> = self
            .processes
            .iter()
            .filter(|(_, p)| !p.alive)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in &pids {
            self.processes.remove(pid);
        }
        // Forgotten altogether: the caller forgets them everywhere else too.
        self.exited.clear();
        self.release_unused();
        Forgotten {
            pids,
            objects: std::mem::take(&mut self.released),
        }
    }

    /// Closes files no process maps (keeping them for the symbolizer to release).
    fn release_unused(&mut self) {
        let unused: Vec<ObjectKey> = self
            .objects
            .iter()
            .filter(|(_, o)| Arc::strong_count(o) == 1)
            .map(|(k, _)| *k)
            .collect();
        for key in unused {
            if let Some(o) = self.objects.remove(&key) {
                self.released.push(o);
            }
        }
    }

    fn enforce_bounds(&mut self) {
        if self.processes.len() > MAX_PROCESSES {
            self.processes.retain(|_, p| p.alive);
        }
        if self.objects.len() > MAX_OPEN_OBJECTS {
            self.release_unused();
        }
    }

    fn object(
        &mut self,
        pid: Pid,
        key: ObjectKey,
        path: &Path,
        start: u64,
        end: u64,
    ) -> Option<Arc<ObjectFile>> {
        if let Some(object) = self.objects.get(&key) {
            return Some(Arc::clone(object));
        }
        if self.objects.len() >= MAX_OPEN_OBJECTS {
            self.release_unused();
            if self.objects.len() >= MAX_OPEN_OBJECTS {
                self.object_errors += 1;
                return None;
            }
        }
        // map_files reaches the very file mapped, even when deleted or in another mount
        // namespace; the root-relative path is the fallback where map_files is not readable.
        let candidates = [
            PathBuf::from(format!("/proc/{}/map_files/{start:x}-{end:x}", pid.0)),
            Path::new(&format!("/proc/{}/root", pid.0))
                .join(clean_path(path).strip_prefix("/").unwrap_or(path)),
        ];
        let mut denied = false;
        let Some(file) = candidates.iter().find_map(|p| match File::open(p) {
            Ok(f) => Some(f),
            Err(e) => {
                denied |= matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES));
                None
            }
        }) else {
            self.object_errors += 1;
            if denied {
                self.object_denied += 1;
            }
            return None;
        };
        let open_path = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&file)
        ));
        // Not blazesym's reader: it takes any note of type 3 (see `elf::read_build_id`).
        let build_id = crate::elf::read_build_id(&file).ok().flatten();
        let debug = crate::debuginfo::find(pid, &clean_path(path), &file, build_id.as_ref());
        let object = Arc::new(ObjectFile {
            key,
            path: clean_path(path),
            open_path,
            build_id,
            go_build_id: crate::elf::read_go_build_id(&file).ok().flatten(),
            debug,
            file,
        });
        self.objects.insert(key, Arc::clone(&object));
        Some(object)
    }
}

/// How `/proc/PID/maps` names the kernel's virtual shared object.
const VDSO: &str = "[vdso]";

/// The vdso, as an object to symbolize and unwind with, for a process whose `[vdso]` mapping is
/// `len` bytes long. Every process of one ABI maps the same image the kernel carries, so ours
/// (copied once into a memory file, the way blazesym's own vdso support reads it) stands for
/// theirs; a mapping of another length (a 32-bit process's vdso) is left unnamed. Bounded: one
/// file of a few pages, for the agent's lifetime.
fn vdso(len: u64) -> Option<Arc<ObjectFile>> {
    static VDSO_OBJECT: OnceLock<Option<(u64, Arc<ObjectFile>)>> = OnceLock::new();
    let (own_len, object) = VDSO_OBJECT
        .get_or_init(|| match copy_own_vdso() {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("vdso frames will be unnamed: cannot copy this process's vdso: {e}");
                None
            }
        })
        .as_ref()?;
    (*own_len == len).then(|| Arc::clone(object))
}

/// Copies this process's vdso into a memory file: its length and the object. `None` where there
/// is no vdso (a kernel built without one).
fn copy_own_vdso() -> std::io::Result<Option<(u64, Arc<ObjectFile>)>> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let text = std::fs::read_to_string("/proc/self/maps")?;
    let Some(map) = maps::parse(&text)
        .0
        .into_iter()
        .find(|m| matches!(&m.path, MapPath::Special(p) if p == VDSO))
    else {
        return Ok(None);
    };
    let len = map.end - map.start;
    // A vdso is a few pages; refuse anything that is not.
    if len == 0 || len > 1 << 20 {
        return Err(std::io::Error::other(format!("a vdso of {len} bytes")));
    }
    let mut bytes = vec![0; len as usize];
    File::open("/proc/self/mem")?.read_exact_at(&mut bytes, map.start)?;
    let fd = rustix::fs::memfd_create("kalypso-vdso", rustix::fs::MemfdFlags::CLOEXEC)?;
    let mut file = File::from(fd);
    file.write_all(&bytes)?;
    let stat = rustix::fs::fstat(&file)?;
    let key = ObjectKey {
        dev: (
            rustix::fs::major(stat.st_dev) as i32,
            rustix::fs::minor(stat.st_dev) as i32,
        ),
        inode: stat.st_ino,
    };
    let open_path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ));
    let object = ObjectFile {
        key,
        path: PathBuf::from(VDSO),
        open_path,
        build_id: crate::elf::read_build_id(&file).ok().flatten(),
        go_build_id: None,
        debug: None,
        file,
    };
    Ok(Some((len, Arc::new(object))))
}

fn clean_path(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text).to_string())
}

/// Whether a process is alive now. A zombie (exited, not yet reaped by its parent) is not.
pub fn exists(pid: Pid) -> bool {
    match Process::new(pid.0 as i32).and_then(|p| p.stat()) {
        Ok(stat) => !matches!(stat.state, 'Z' | 'X' | 'x'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(start: u64, end: u64) -> Mapping {
        Mapping {
            start: VirtAddr(start),
            end: VirtAddr(end),
            offset: FileOffset(0x1000),
            object: None,
            label: "x".into(),
        }
    }

    #[test]
    fn finds_the_mapping_holding_an_address() {
        let info = ProcessInfo {
            mappings: vec![mapping(0x1000, 0x2000), mapping(0x5000, 0x6000)],
            ..Default::default()
        };
        assert_eq!(
            info.mapping(VirtAddr(0x1000)).unwrap().start,
            VirtAddr(0x1000)
        );
        assert_eq!(
            info.mapping(VirtAddr(0x1fff)).unwrap().start,
            VirtAddr(0x1000)
        );
        assert!(info.mapping(VirtAddr(0x2000)).is_none());
        assert!(info.mapping(VirtAddr(0x0fff)).is_none());
        assert_eq!(
            info.mapping(VirtAddr(0x5800)).unwrap().start,
            VirtAddr(0x5000)
        );
        assert!(info.mapping(VirtAddr(0x7000)).is_none());
    }

    #[test]
    fn file_offset_accounts_for_the_mapping_offset() {
        let m = mapping(0x5000, 0x6000);
        assert_eq!(m.file_offset(VirtAddr(0x5010)), Some(FileOffset(0x1010)));
        assert_eq!(m.file_offset(VirtAddr(0x4fff)), None);
    }

    #[test]
    fn reads_its_own_mappings_with_build_id() {
        let mut table = ProcessTable::default();
        let me = Pid(std::process::id());
        table.refresh(me).unwrap();
        let info = table.get(me).unwrap();
        let here = VirtAddr(reads_its_own_mappings_with_build_id as *const () as usize as u64);
        let m = info.mapping(here).expect("own code is mapped");
        let object = m.object.as_ref().expect("own binary is a file");
        assert_eq!(object.path, std::env::current_exe().unwrap());
        assert!(
            object.build_id.is_some(),
            "rustc-built binaries carry a GNU build id"
        );
    }

    /// Maps `bytes` (padded to a page) executable into this process, as a loader would.
    fn map_exec(bytes: &[u8]) -> (tempfile::NamedTempFile, memmap2::Mmap) {
        let mut page = bytes.to_vec();
        page.resize(bytes.len().next_multiple_of(4096), 0);
        let file = crate::elf::tests::write_temp(&page);
        // SAFETY: a private temporary file this test alone writes, mapped read-only.
        let map = unsafe { memmap2::MmapOptions::new().map_exec(file.as_file()) }.unwrap();
        (file, map)
    }

    #[test]
    fn a_file_with_systemtap_notes_and_no_gnu_note_has_no_build_id() {
        let sdt: crate::elf::tests::Note<'_> = (b"stapsdt", 3, b"libstdcxx\0catch\08@%r8\0");
        let gnu_id = [0x5a; 20];
        let (_only_sdt, only_sdt) = map_exec(&crate::elf::tests::elf_with_notes(&[sdt], false));
        let (_both, both) = map_exec(&crate::elf::tests::elf_with_notes(
            &[sdt, (b"GNU", 3, &gnu_id)],
            true,
        ));
        let mut table = ProcessTable::default();
        let me = Pid(std::process::id());
        table.refresh(me).unwrap();
        let info = table.get(me).unwrap();
        let build_id = |map: &memmap2::Mmap| {
            let m = info.mapping(VirtAddr(map.as_ptr() as u64)).expect("mapped");
            m.object.as_ref().expect("a file").build_id.clone()
        };
        assert_eq!(build_id(&only_sdt), None);
        assert_eq!(build_id(&both), Some(BuildId(gnu_id.to_vec())));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = Pid(child.id());
        // Not reaped yet: a zombie until wait().
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!exists(pid));
        child.wait().unwrap();
        assert!(exists(Pid(std::process::id())));
    }

    #[test]
    fn forgetting_an_exited_process_releases_its_files() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid(child.id());
        let mut table = ProcessTable::default();
        // exec switches /proc/PID/exe before it maps the new binary: wait for the mapping.
        let maps_sleep = |t: &ProcessTable| {
            t.get(pid).is_some_and(|p| {
                p.mappings
                    .iter()
                    .any(|m| m.object.as_ref().is_some_and(|o| o.path.ends_with("sleep")))
            })
        };
        while {
            table.refresh(pid).unwrap();
            !maps_sleep(&table)
        } {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let exe = table.get(pid).unwrap().exe.clone().unwrap();
        assert!(
            table.forget_exited().pids.is_empty(),
            "a live process is kept"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(table.refresh(pid).is_err());
        assert!(
            !table.get(pid).unwrap().alive,
            "kept, marked dead, until forgotten"
        );
        let forgotten = table.forget_exited();
        assert_eq!(forgotten.pids, vec![pid]);
        assert!(
            forgotten.objects.iter().any(|o| o.path == exe),
            "{:?}",
            forgotten.objects
        );
        assert!(table.get(pid).is_none());
    }

    #[test]
    fn revalidation_notices_a_quiet_exit_and_the_subset_keeps_its_mappings() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid(child.id());
        let me = Pid(std::process::id());
        let mut table = ProcessTable::default();
        table.refresh(me).unwrap();
        table.refresh(pid).unwrap();
        assert!(table.revalidate().is_empty(), "nothing changed");
        assert!(table.get(pid).unwrap().alive);

        let copy = table.subset([pid, Pid(u32::MAX - 1)]);
        assert_eq!(
            copy.len(),
            1,
            "only the pids asked for, and only known ones"
        );
        assert_eq!(
            copy.get(pid).unwrap().mappings.len(),
            table.get(pid).unwrap().mappings.len()
        );

        child.kill().unwrap();
        child.wait().unwrap();
        assert!(table.revalidate().is_empty());
        assert!(!table.get(pid).unwrap().alive, "its exit is noticed");
        assert!(table.get(me).unwrap().alive);
        assert_eq!(table.forget_exited().pids, vec![pid]);
        assert!(copy.get(pid).is_some(), "the copy outlives the forgetting");
    }

    #[test]
    fn a_recycled_pid_is_not_the_process_first_seen() {
        let me = Pid(std::process::id());
        let mut table = ProcessTable::default();
        table.refresh(me).unwrap();
        table.processes.get_mut(&me).unwrap().start_time += 1;
        table.revalidate();
        assert!(!table.get(me).unwrap().alive);
    }

    #[test]
    fn a_missing_process_is_an_error() {
        let mut table = ProcessTable::default();
        assert!(matches!(
            table.refresh(Pid(u32::MAX - 1)),
            Err(ProcessError::NoSuchProcess(_))
        ));
    }
}
