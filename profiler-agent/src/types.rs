//! Newtypes for the numbers that cross stage boundaries, so an address is never mistaken for an
//! offset or a pid.
use std::fmt;

/// A process id (the kernel's tgid).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub u32);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An address in a process's (or the kernel's) virtual address space, as the CPU saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VirtAddr(pub u64);

/// An offset into an ELF file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileOffset(pub u64);

/// A GNU build id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BuildId(pub Vec<u8>);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Why a stack is missing from a sample. The sample is still counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackLoss {
    /// Two different stacks hashed to one stack-map bucket in the same tick.
    Collision,
    /// Any other `bpf_get_stackid` error (the errno).
    Error(i32),
    /// The stack was recorded, but reading it from its map failed (the errno; `ENOENT`: the
    /// entry was missing).
    MapRead(i32),
}

impl StackLoss {
    /// The placeholder frame shown instead of the lost stack.
    pub fn frame_name(self) -> String {
        match self {
            StackLoss::Collision => "[stack lost: map collision]".into(),
            StackLoss::Error(errno) => format!("[stack lost: error {errno}]"),
            StackLoss::MapRead(errno) => format!("[stack lost: map read error {errno}]"),
        }
    }
}
