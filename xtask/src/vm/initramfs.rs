//! The initramfs: the agent, the workloads and their libraries, in the kernel's newc format.
use super::*;

/// The program interpreter and DT_NEEDED libraries of an ELF file, from `readelf` (GNU readelf
/// reads every architecture's ELF).
pub(super) fn elf_dependencies(file: &Path) -> Result<(Option<String>, Vec<String>)> {
    let out = Command::new("readelf")
        .args(["-W", "-l", "-d"])
        .arg(file)
        .output()
        .context("running readelf")?;
    if !out.status.success() {
        bail!(
            "readelf {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let bracketed = |l: &str, marker: &str| -> Option<String> {
        let rest = &l[l.find(marker)? + marker.len()..];
        Some(rest[..rest.find(']')?].to_string())
    };
    let interp = text
        .lines()
        .find_map(|l| bracketed(l, "[Requesting program interpreter: "));
    let needed = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| bracketed(l, "Shared library: ["))
        .collect();
    Ok((interp, needed))
}

/// Every shared library `programs` need, transitively: (path in the guest, file on the host).
pub(super) fn shared_libraries(
    arch: Arch,
    programs: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>> {
    let dirs = arch.lib_dirs();
    let resolve = |name: &str| -> Result<PathBuf> {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| p.exists())
            .with_context(|| format!("shared library {name} not found in {dirs:?}"))
    };
    let mut libs = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<PathBuf> = programs.to_vec();
    while let Some(file) = todo.pop() {
        let (interp, needed) = elf_dependencies(&file)?;
        if let Some(interp) = interp {
            // The interpreter at the absolute path the binaries ask for.
            let base = Path::new(&interp)
                .file_name()
                .context("empty interpreter path")?
                .to_string_lossy()
                .into_owned();
            let host = if arch.is_host() {
                PathBuf::from(&interp)
            } else {
                resolve(&base)?
            };
            libs.insert(interp.trim_start_matches('/').to_string(), host);
        }
        for name in needed {
            if seen.insert(name.clone()) {
                let host = resolve(&name)?;
                libs.insert(format!("lib/{}/{name}", arch.triplet()), host.clone());
                todo.push(host);
            }
        }
    }
    Ok(libs)
}

pub(super) fn build_initramfs(
    arch: Arch,
    root: &Path,
    busybox: &Path,
    programs: &[(String, PathBuf)],
    out: &Path,
) -> Result<()> {
    let mut fs = Cpio::default();
    for dir in ["proc", "sys", "dev", "root", "etc", "sys/kernel/debug"] {
        fs.add(dir, Node::Dir(0o755));
    }
    fs.add("tmp", Node::Dir(0o1777));
    fs.add("dev/console", Node::CharDev(5, 1));
    fs.add("bin/busybox", Node::file(busybox, 0o755)?);
    fs.add("bin/sh", Node::Symlink("busybox".into()));
    fs.add("init", Node::file(&root.join("tests/vm/init.sh"), 0o755)?);
    fs.add(
        "etc/passwd",
        Node::File(
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n".to_vec(),
            0o644,
        ),
    );
    let paths: Vec<PathBuf> = programs.iter().map(|(_, p)| p.clone()).collect();
    for (name, path) in programs {
        fs.add(&format!("opt/kalypso/{name}"), Node::file(path, 0o755)?);
    }
    for (guest, host) in shared_libraries(arch, &paths)? {
        fs.add(&guest, Node::file(&host, 0o755)?);
    }
    let cpio = fs.to_newc();
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(out)?)
        .spawn()
        .context("running gzip")?;
    gzip.stdin
        .take()
        .expect("piped")
        .write_all(&cpio)
        .context("writing to gzip")?;
    let status = gzip.wait()?;
    if !status.success() {
        bail!("gzip failed ({status})");
    }
    eprintln!(
        "vm-test: initramfs {} ({:.1} MB, {:.1} MB unpacked)",
        out.display(),
        std::fs::metadata(out)?.len() as f64 / 1e6,
        cpio.len() as f64 / 1e6
    );
    Ok(())
}

pub(super) enum Node {
    Dir(u32),
    File(Vec<u8>, u32),
    Symlink(String),
    CharDev(u32, u32),
}

impl Node {
    pub(super) fn file(path: &Path, mode: u32) -> Result<Node> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Node::File(data, mode))
    }
}

/// An initramfs image in the kernel's `newc` cpio format (written here rather than with cpio(1)
/// so that the device node /dev/console needs no root and the image is reproducible).
#[derive(Default)]
pub(super) struct Cpio {
    /// By path without the leading `/`; a BTreeMap orders every directory before its contents.
    pub(super) nodes: BTreeMap<String, Node>,
}

impl Cpio {
    pub(super) fn add(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/');
        let mut parent = Path::new(path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.nodes
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir(0o755));
            parent = p.parent();
        }
        self.nodes.insert(path.to_string(), node);
    }

    pub(super) fn to_newc(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, node)) in (1..).zip(&self.nodes) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir(m) => (0o040000 | m, &[], (0, 0)),
                Node::File(d, m) => (0o100000 | m, d, (0, 0)),
                Node::Symlink(t) => (0o120777, t.as_bytes(), (0, 0)),
                Node::CharDev(maj, min) => (0o020600, &[], (*maj, *min)),
            };
            let nlink = if matches!(node, Node::Dir(_)) { 2 } else { 1 };
            newc_entry(&mut out, ino, mode, nlink, rdev, path, data);
        }
        newc_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }
}

pub(super) fn newc_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).expect("initramfs files are < 4 GiB"),
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        u32::try_from(name.len() + 1).expect("short names"),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

pub(super) fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}
