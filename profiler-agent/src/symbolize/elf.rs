//! ELF and DWARF code through blazesym: symbol tables, DWARF lines and inlined functions,
//! demangling, separate debug files.
use std::sync::Arc;

use blazesym::symbolize::{CodeInfo, Sym, Symbolized};

use super::{Frame, FrameKind, Frames, intern};
use crate::process::ObjectFile;
use crate::types::FileOffset;

/// The object's separate debug file and the addresses in it, when it has one that covers every
/// offset (its symbol table and DWARF are a superset of what the stripped file carries).
pub(super) fn debug_offsets<'o>(
    object: &'o ObjectFile,
    todo: &[(usize, FileOffset)],
) -> Option<(&'o std::path::PathBuf, Vec<u64>)> {
    let debug = object.debug.as_ref()?;
    let virt = todo
        .iter()
        .map(|(_, off)| debug.virt_offset(*off))
        .collect::<Option<Vec<u64>>>()?;
    Some((&debug.path, virt))
}

fn file_name(info: &CodeInfo<'_>, names: &mut std::collections::HashSet<Arc<str>>) -> Arc<str> {
    intern(names, info.to_path().to_string_lossy().as_ref())
}

/// blazesym reports the outer function with the inlined calls in nesting order (outer to inner);
/// we want innermost first, each with its own line.
pub(super) fn to_frames(
    sym: Option<&Symbolized<'_>>,
    names: &mut std::collections::HashSet<Arc<str>>,
) -> Frames {
    let Some(Symbolized::Sym(sym)) = sym else {
        return Frames::from([]);
    };
    let Sym {
        name,
        code_info,
        inlined,
        ..
    } = sym;
    let mut frames: Vec<Frame> = Vec::with_capacity(1 + inlined.len());
    for inl in inlined.iter().rev() {
        frames.push(Frame {
            function: intern(names, inl.name.as_ref()),
            file: inl.code_info.as_ref().map(|c| file_name(c, names)),
            line: inl.code_info.as_ref().and_then(|c| c.line),
            kind: FrameKind::Native,
        });
    }
    frames.push(Frame {
        function: intern(names, name.as_ref()),
        file: code_info.as_deref().map(|c| file_name(c, names)),
        line: code_info.as_deref().and_then(|c| c.line),
        kind: FrameKind::Native,
    });
    Frames::from(frames)
}
