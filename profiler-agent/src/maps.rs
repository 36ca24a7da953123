//! `/proc/PID/maps`, parsed here rather than by procfs: any process chooses the paths its
//! mappings show, and procfs-core 0.18 panics on some (a path starting with `/SYSV` shorter than
//! 13 bytes), which would let one process crash the agent. This parser never panics; a line it
//! cannot read is skipped and counted.

/// What a mapping is backed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapPath {
    /// A file (the kernel appends " (deleted)" to removed ones; kept here).
    File(String),
    /// `[vdso]`, `[stack]`, `[heap]`, … and other bracketed names.
    Special(String),
    /// No name: anonymous memory (JIT code, for instance).
    Anonymous,
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    pub offset: u64,
    /// (major, minor).
    pub dev: (i32, i32),
    pub inode: u64,
    pub path: MapPath,
}

/// Every line that parses, in file order, and how many did not.
pub fn parse(text: &str) -> (Vec<MapEntry>, usize) {
    let mut entries = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(entry) => entries.push(entry),
            None => bad += 1,
        }
    }
    (entries, bad)
}

/// `start-end perms offset major:minor inode [path]`, fields separated by spaces; the path is
/// the rest of the line after the padding and may itself contain spaces.
pub fn parse_line(line: &str) -> Option<MapEntry> {
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (f, r) = trimmed.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if end < start {
        return None;
    }
    let perms = perms.as_bytes();
    if perms.len() < 3 {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let path = rest.trim_start_matches(' ');
    let path = if path.is_empty() {
        MapPath::Anonymous
    } else if path.starts_with('[') {
        MapPath::Special(path.to_string())
    } else {
        MapPath::File(path.to_string())
    };
    Some(MapEntry {
        start,
        end,
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        executable: perms[2] == b'x',
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: (
            i32::from_str_radix(major, 16).ok()?,
            i32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_lines() {
        let text = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234   /usr/bin/cat
55d0c0a02000-55d0c0a07000 r-xp 00002000 fd:01 1234   /usr/bin/cat
7ffd1a000000-7ffd1a021000 rw-p 00000000 00:00 0      [stack]
7ffd1a1fe000-7ffd1a200000 r-xp 00000000 00:00 0      [vdso]
7f0000000000-7f0000001000 r-xp 00000000 00:00 0
7f0000002000-7f0000003000 r-xp 00001000 08:02 99     /tmp/a file with spaces (deleted)
";
        let (entries, bad) = parse(text);
        assert_eq!(bad, 0);
        assert_eq!(entries.len(), 6);
        let text_seg = &entries[1];
        assert_eq!(
            (text_seg.start, text_seg.end, text_seg.offset),
            (0x55d0c0a02000, 0x55d0c0a07000, 0x2000)
        );
        assert!(text_seg.executable && text_seg.readable && !text_seg.writable);
        assert_eq!(text_seg.dev, (0xfd, 1));
        assert_eq!(text_seg.inode, 1234);
        assert_eq!(text_seg.path, MapPath::File("/usr/bin/cat".into()));
        assert_eq!(entries[3].path, MapPath::Special("[vdso]".into()));
        assert_eq!(entries[4].path, MapPath::Anonymous);
        assert_eq!(
            entries[5].path,
            MapPath::File("/tmp/a file with spaces (deleted)".into())
        );
    }

    #[test]
    fn hostile_and_broken_lines_are_skipped_not_fatal() {
        // What crashed procfs-core 0.18: a short path starting with /SYSV.
        let (entries, bad) = parse("5-0  0 8:0 1 /SYSV\n10-20 r-xp 0 8:0 1 /SYSV\n");
        assert_eq!(bad, 1, "end before start");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].path, MapPath::File("/SYSV".into()));
        for line in [
            "",
            "zz-10 r-xp 0 0:0 0",
            "10-20",
            "10-20 r- 0 0:0 0",
            "10-20 r-xp 0 00 0",
        ] {
            assert!(parse_line(line).is_none(), "{line:?}");
        }
        let (entries, bad) = parse("10-20 r-xp 0 0:0 0 /\u{e9}\u{1F600}x\n");
        assert_eq!((entries.len(), bad), (1, 0));
    }
}
