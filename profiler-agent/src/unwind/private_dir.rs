//! A directory only this agent can write to, reached without following links: where the table
//! cache lives. A root agent must never write where another user points it (a symbolic link
//! planted at a predictable path) nor read tables another user planted.
//!
//! The directory is opened once, its last component with `O_NOFOLLOW`, and checked on the open
//! descriptor (a directory, owned by this agent's uid, writable by no one else); every later
//! operation is relative to that descriptor (`openat`, `renameat`, `unlinkat`), so renaming or
//! replacing a path component afterwards changes nothing. Files are opened with `O_NOFOLLOW`
//! and used only when they are regular files this uid owns.
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::cache::{CacheError, NotPrivate};

/// Mode of directories and files this module creates.
const PRIVATE_DIR_MODE: u32 = 0o700;
const PRIVATE_FILE_MODE: u32 = 0o600;

/// An open private directory.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
    uid: u32,
}

/// A directory entry: name, size, last modification.
pub struct Entry {
    pub name: CString,
    pub len: u64,
    pub modified: SystemTime,
    pub is_file: bool,
}

impl PrivateDir {
    /// Opens `path`, creating it (and missing parents) with mode 0700. Refuses a symbolic link,
    /// anything but a directory, a directory another uid owns, and one others may write to
    /// unless it is empty (a freshly mounted volume, as a Kubernetes `emptyDir` is, with mode
    /// 0777), which is then made 0700.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let create = |source: io::Error| CacheError::CreateDir {
            path: path.to_owned(),
            source,
        };
        let refuse = |reason| CacheError::NotPrivate {
            path: path.to_owned(),
            reason,
        };
        let uid = rustix::process::geteuid().as_raw();
        let name = match path.file_name() {
            Some(name) if !path.ends_with("..") => name,
            _ => {
                return Err(create(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the path must end in a directory name",
                )));
            }
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Parents are the user's choice of path (links in them are followed); only the last
        // component, the one that sits in a possibly shared directory, is held to the rules.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(parent)
            .map_err(create)?;
        let parent_fd = rustix::fs::openat(
            CWD,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| create(e.into()))?;
        match rustix::fs::mkdirat(&parent_fd, name, Mode::from_raw_mode(PRIVATE_DIR_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(create(e.into())),
        }
        let fd = match rustix::fs::openat(
            &parent_fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let link = rustix::fs::statat(&parent_fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
                return Err(refuse(if link {
                    NotPrivate::Symlink
                } else {
                    NotPrivate::NotADirectory
                }));
            }
            Err(e) => return Err(create(e.into())),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| create(e.into()))?;
        if st.st_uid != uid {
            return Err(refuse(NotPrivate::Owner {
                owner: st.st_uid,
                uid,
            }));
        }
        let dir = Self {
            path: path.to_owned(),
            fd,
            uid,
        };
        let mode = st.st_mode & 0o7777;
        if mode & 0o022 != 0 {
            if !dir.entries().map_err(create)?.is_empty() {
                return Err(refuse(NotPrivate::Writable { mode }));
            }
            rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(PRIVATE_DIR_MODE))
                .map_err(|e| create(e.into()))?;
            // Someone may have written between the look and the change of mode.
            if !dir.entries().map_err(create)?.is_empty() {
                return Err(refuse(NotPrivate::Writable { mode }));
            }
            tracing::info!(
                "made the unwind table cache directory {} private (mode {mode:o} -> 700)",
                path.display()
            );
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `name` for reading: `Ok(None)` when absent; an error when it is a link, not a
    /// regular file, or owned by another uid (never to be read).
    pub fn open_file(&self, name: &str) -> io::Result<Option<File>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        if st.st_uid != self.uid {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("owned by uid {}, not by this agent", st.st_uid),
            ));
        }
        Ok(Some(File::from(fd)))
    }

    /// Creates a new file (readable and writable, mode 0600) under a fresh name starting with
    /// `prefix`; returns it with its name.
    pub fn create_temp(&self, prefix: &str) -> io::Result<(File, String)> {
        for _ in 0..16 {
            let name = format!(
                "{prefix}{}.tmp",
                std::iter::repeat_with(fastrand::alphanumeric)
                    .take(12)
                    .collect::<String>()
            );
            match rustix::fs::openat(
                &self.fd,
                name.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(PRIVATE_FILE_MODE),
            ) {
                Ok(fd) => return Ok((File::from(fd), name)),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary file name",
        ))
    }

    /// Renames `from` to `to` within the directory (replacing `to`).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to).map_err(io::Error::from)
    }

    /// Removes the file `name` (a link is removed, never followed).
    pub fn remove(&self, name: &CStr) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io::Error::from)
    }

    /// Everything in the directory but `.` and `..`, with sizes and times (links not followed).
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let modified = SystemTime::UNIX_EPOCH
                + std::time::Duration::new(
                    u64::try_from(st.st_mtime).unwrap_or(0),
                    u32::try_from(st.st_mtime_nsec).unwrap_or(0),
                );
            out.push(Entry {
                name: name.to_owned(),
                len: u64::try_from(st.st_size).unwrap_or(0),
                modified,
                is_file: FileType::from_raw_mode(st.st_mode) == FileType::RegularFile,
            });
        }
        Ok(out)
    }
}

impl Entry {
    pub fn name_str(&self) -> &OsStr {
        OsStr::from_bytes(self.name.to_bytes())
    }
}
