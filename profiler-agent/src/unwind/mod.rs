//! Unwinding without frame pointers: unwind tables built from `.eh_frame` / `.debug_frame`
//! ([`table`]), cached on disk by object ([`cache`]), split into pages for the kernel-side
//! unwinder, and replayed in userspace over recorded stacks ([`replay`]).
//!
//! The table format and the unwinding step live in [`profiler_common::unwind`], shared with the
//! BPF program.
pub mod cache;
pub mod in_memory;
pub mod layout;
pub mod loader;
mod private_dir;
pub mod replay;
pub mod table;
