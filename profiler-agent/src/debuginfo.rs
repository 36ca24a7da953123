//! Separate debug files (Debian's `-dbg`/`-dbgsym` packages, Fedora's debuginfo): found by build id
//! (`.build-id/xx/rest.debug`) and by `.gnu_debuglink` (name + CRC-32), under the profiled
//! process's own root (`/proc/PID/root/usr/lib/debug`, so a container's debug files are used for
//! that container's binaries) and under the node's own debug directory ([`node_debug_dir`]).
//!
//! blazesym 0.2.7 follows `.gnu_debuglink` itself, but only in directories fixed when the
//! symbolizer is built and only as seen from the agent's own mount namespace (it canonicalizes
//! `/proc/self/fd/N`), and never for a file that has a build id but no debug link: it cannot look
//! inside each container's root. Hence this lookup, once per opened file.
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use object::Object;
use object::read::ReadCache;

use crate::elf::Pread;
use crate::types::{BuildId, FileOffset, Pid};

/// The node's `/usr/lib/debug` as this agent reaches it, and how it was found: first through the
/// root of the node's init. The DaemonSet shares the host's PID namespace (as every node-wide
/// profiler must), so PID 1 is the node's init and its root the node's filesystem. No hostPath
/// volume is needed, and a node without the directory (an immutable OS) starts the pod all the
/// same. On a host, outside a container, this is `/usr/lib/debug` itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeDebugDir {
    /// `None` when no process in the node's mount namespace lets us see its root.
    pub dir: Option<PathBuf>,
    /// One line for the log: which root, or why none.
    pub how: String,
}

/// The node's debug directory, resolved once per agent (see [`resolve_node_debug_dir`]).
pub fn node_debug_dir() -> &'static NodeDebugDir {
    static DIR: std::sync::OnceLock<NodeDebugDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let found = resolve_node_debug_dir(Path::new("/proc"), std::os::unix::process::parent_id());
        if found.dir.is_some() {
            tracing::info!("{}", found.how);
        } else {
            tracing::warn!("{}", found.how);
        }
        found
    })
}

/// PID 1's root when it can be read; else the root of the agent's parent. Some inits cannot be
/// looked into even with CAP_SYS_PTRACE (a sandbox's init, or one an LSM guards: `readlink
/// /proc/1/root` fails with EACCES); the agent's parent is then the container runtime's shim
/// (containerd-shim, conmon), which lives in the node's mount namespace. Without a container, the
/// parent is the shell that started the agent, whose root is the agent's own.
pub fn resolve_node_debug_dir(proc: &Path, parent: u32) -> NodeDebugDir {
    let init = proc.join("1/root");
    let init_error = match std::fs::read_link(&init) {
        Ok(_) => {
            return NodeDebugDir {
                dir: Some(init.join("usr/lib/debug")),
                how: format!(
                    "node debug files: under {}",
                    init.join("usr/lib/debug").display()
                ),
            };
        }
        Err(e) => e,
    };
    // 0: the parent is outside this PID namespace; 1: the same init again.
    if parent <= 1 {
        return NodeDebugDir {
            dir: None,
            how: format!(
                "node debug files are not searched: {}: {init_error}, and the agent has no parent process in this PID namespace",
                init.display()
            ),
        };
    }
    let root = proc.join(format!("{parent}/root"));
    match std::fs::read_link(&root) {
        Ok(_) => {
            let comm =
                std::fs::read_to_string(proc.join(format!("{parent}/comm"))).unwrap_or_default();
            NodeDebugDir {
                dir: Some(root.join("usr/lib/debug")),
                how: format!(
                    "node debug files: under {} (the agent's parent, {}; {}: {init_error})",
                    root.join("usr/lib/debug").display(),
                    comm.trim(),
                    init.display()
                ),
            }
        }
        Err(e) => NodeDebugDir {
            dir: None,
            how: format!(
                "node debug files are not searched: {}: {init_error}; {}: {e}",
                init.display(),
                root.display()
            ),
        },
    }
}

/// A debug file for one mapped ELF file, held open, and how to address it.
#[derive(Clone, Debug)]
pub struct DebugFile {
    /// `/proc/self/fd/N` of the open file: a path under `/proc/PID/root` stops working when that
    /// process exits, and its samples are symbolized after that as often as before.
    pub path: PathBuf,
    /// Where it was found, as this agent reached it (for messages).
    pub found: PathBuf,
    file: std::sync::Arc<File>,
    /// Executable `PT_LOAD` segments of the *mapped* file: (file offset, virtual address, size).
    /// A debug file's own offsets mean nothing (its code sections are NOBITS), so addresses go
    /// to it as virtual offsets, converted here.
    segments: Vec<(u64, u64, u64)>,
}

impl DebugFile {
    /// The open debug file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The virtual offset of a file offset of the mapped file, if it lies in executable code.
    pub fn virt_offset(&self, off: FileOffset) -> Option<u64> {
        self.segments
            .iter()
            .find(|(start, _, size)| off.0 >= *start && off.0 - start < *size)
            .map(|(start, vaddr, _)| off.0 - start + vaddr)
    }
}

/// The debug directories searched for a file of process `pid`, in order.
pub fn debug_dirs(pid: Pid) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(format!("/proc/{}/root/usr/lib/debug", pid.0))];
    dirs.extend(node_debug_dir().dir.clone());
    dirs
}

/// Looks for the debug file of `file` (mapped by `pid` at `path`, as the process sees it).
pub fn find(pid: Pid, path: &Path, file: &File, build_id: Option<&BuildId>) -> Option<DebugFile> {
    let root = PathBuf::from(format!("/proc/{}/root", pid.0));
    let found = find_in(&root, &debug_dirs(pid), path, file, build_id)?;
    let segments = crate::elf::executable_segments_of(file);
    if segments.is_empty() {
        return None;
    }
    let debug = File::open(&found).ok()?;
    Some(DebugFile {
        path: PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&debug)
        )),
        found,
        file: std::sync::Arc::new(debug),
        segments,
    })
}

/// [`find`] with the process root and debug directories given (tests use temporary ones).
pub fn find_in(
    root: &Path,
    dirs: &[PathBuf],
    path: &Path,
    file: &File,
    build_id: Option<&BuildId>,
) -> Option<PathBuf> {
    if let Some(id) = build_id.filter(|id| id.0.len() >= 2) {
        let hex = id.to_string();
        let rel = format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..]);
        for dir in dirs {
            let candidate = dir.join(&rel);
            if has_build_id(&candidate, id) {
                return Some(candidate);
            }
        }
    }
    let (name, crc) = debug_link(file)?;
    // The places GDB looks: beside the file, in .debug/ beside it, and under each debug
    // directory at the file's own directory.
    let dir = path.parent().unwrap_or(Path::new("/"));
    let rel_dir = dir.strip_prefix("/").unwrap_or(dir);
    let mut candidates = vec![
        root.join(rel_dir).join(&name),
        root.join(rel_dir).join(".debug").join(&name),
    ];
    candidates.extend(dirs.iter().map(|d| d.join(rel_dir).join(&name)));
    candidates
        .into_iter()
        .find(|c| c.as_path() != path && file_crc32(c) == Some(crc))
}

fn has_build_id(path: &Path, id: &BuildId) -> bool {
    File::open(path)
        .ok()
        .and_then(|f| crate::elf::read_build_id(&f).ok().flatten())
        .is_some_and(|found| found == *id)
}

/// The `.gnu_debuglink` section: a file name and the CRC-32 of that file.
pub fn debug_link(file: &File) -> Option<(String, u32)> {
    let data = ReadCache::new(Pread::new(file));
    let elf = object::File::parse(&data).ok()?;
    let (name, crc) = elf.gnu_debuglink().ok()??;
    let name = std::str::from_utf8(name).ok()?;
    // A bare file name; anything with a path in it is not what the format means.
    (!name.is_empty() && !name.contains('/')).then(|| (name.to_string(), crc))
}

/// CRC-32 (IEEE, as `.gnu_debuglink` uses) of a whole file; `None` if it cannot be read.
fn file_crc32(path: &Path) -> Option<u32> {
    let mut f = File::open(path).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Some(crc.finalize()),
            Ok(n) => crc.update(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests;
