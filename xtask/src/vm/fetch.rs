//! Debian's kernel and busybox for the VM, fetched with apt-get download into the cache.
use super::*;

pub(super) fn ensure_dpkg_architecture(arch: Arch) -> Result<()> {
    let native = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg")?;
    if String::from_utf8_lossy(&native.stdout).trim() == arch.deb() {
        return Ok(());
    }
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()
        .context("running dpkg")?;
    if String::from_utf8_lossy(&foreign.stdout)
        .lines()
        .any(|l| l.trim() == arch.deb())
    {
        return Ok(());
    }
    setup::run_checked(&mut privileged("dpkg", &["--add-architecture", arch.deb()]))?;
    apt_update()
}

/// `program args`, through sudo when not root (as `cargo xtask setup` does).
pub(super) fn privileged(program: &str, args: &[&str]) -> Command {
    if setup::is_root() {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    } else {
        let mut cmd = Command::new("sudo");
        cmd.arg(program).args(args);
        cmd
    }
}

pub(super) fn apt_update() -> Result<()> {
    setup::run_checked(
        privileged("apt-get", &["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The versioned kernel package that `linux-image-<arch>` depends on, e.g.
/// `linux-image-6.1.0-56-arm64`.
pub(super) fn kernel_package(arch: Arch) -> Result<String> {
    let meta = format!("linux-image-{}:{}", arch.deb(), arch.deb());
    let out = Command::new("apt-cache")
        .args(["depends", &meta])
        .output()
        .context("running apt-cache")?;
    parse_kernel_dependency(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
        format!(
            "apt-cache knows no kernel for {meta} (run `apt-get update`?): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

pub(super) fn parse_kernel_dependency(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends: ")?;
        let name = dep.split(':').next()?.trim();
        (name.starts_with("linux-image-") && name.chars().any(|c| c.is_ascii_digit()))
            .then(|| name.to_string())
    })
}

/// The cached `.deb` of `package` for `arch` in `dir`, downloaded with `apt-get download` when
/// missing.
pub(super) fn download(package: &str, arch: Arch, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let find = || -> Result<Option<PathBuf>> {
        let prefix = format!("{package}_");
        let suffix = format!("_{}.deb", arch.deb());
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(&suffix) {
                return Ok(Some(dir.join(name)));
            }
        }
        Ok(None)
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    eprintln!("vm-test: apt-get download {package}:{}", arch.deb());
    let out = Command::new("apt-get")
        .args(["download", "-q", &format!("{package}:{}", arch.deb())])
        .current_dir(dir)
        .output()
        .context("running apt-get download")?;
    if !out.status.success() {
        bail!(
            "apt-get download {package}:{} failed: {}",
            arch.deb(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    find()?.with_context(|| {
        format!(
            "apt-get download left no {package} .deb in {}",
            dir.display()
        )
    })
}

/// Debian's kernel for `arch`: (package name, path of its vmlinuz). Only `/boot` is unpacked:
/// the kernel has everything the test needs built in (BPF, perf events, the serial console,
/// devtmpfs, gzip'd initramfs), so its 400 MB of modules stay in the .deb.
pub(super) fn fetch_kernel(arch: Arch, cache: &Path) -> Result<(String, PathBuf)> {
    match fetch_kernel_once(arch, cache) {
        Ok(found) => Ok(found),
        Err(e) => {
            // Stale package lists: the mirror has moved on to a newer kernel ABI, or the lists of
            // a just-added architecture were never fetched.
            eprintln!("vm-test: {e:#}; updating the package lists and retrying");
            apt_update()?;
            fetch_kernel_once(arch, cache)
        }
    }
}

pub(super) fn fetch_kernel_once(arch: Arch, cache: &Path) -> Result<(String, PathBuf)> {
    let package = kernel_package(arch)?;
    let unpacked = cache.join("kernel").join(&package);
    let vmlinuz = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir.join("boot"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
    };
    if let Some(k) = vmlinuz(&unpacked) {
        return Ok((package, k));
    }
    // A new kernel ABI replaces the cached one: drop the old .deb and unpacked tree.
    prune(&cache.join("kernel"), "linux-image-", &package)?;
    prune(&cache.join("debs"), "linux-image-", &format!("{package}_"))?;
    let deb = download(&package, arch, &cache.join("debs"))?;
    let partial = cache.join("kernel").join(format!("{package}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let mut dpkg = Command::new("dpkg")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("running dpkg --fsys-tarfile")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "./boot/*"])
        .current_dir(&partial)
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()
        .context("running tar")?;
    let dpkg = dpkg.wait()?;
    if !dpkg.success() || !tar.success() {
        bail!(
            "unpacking {} failed (dpkg {dpkg}, tar {tar})",
            deb.display()
        );
    }
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::rename(&partial, &unpacked)?;
    let k =
        vmlinuz(&unpacked).with_context(|| format!("no boot/vmlinuz-* in {}", deb.display()))?;
    Ok((package, k))
}

/// Removes the entries of `dir` that start with `family` but not with `keep`.
pub(super) fn prune(dir: &Path, family: &str, keep: &str) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with(family) && !name.starts_with(keep) {
            eprintln!("vm-test: removing the outdated {}", path.display());
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
    }
    Ok(())
}

/// Debian's statically linked busybox for `arch`, unpacked with `dpkg -x` into the cache.
pub(super) fn fetch_busybox(arch: Arch, cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("busybox");
    let binary = dir.join("bin/busybox");
    if binary.exists() {
        return Ok(binary);
    }
    let deb = download("busybox-static", arch, &cache.join("debs"))?;
    let _ = std::fs::remove_dir_all(&dir);
    setup::run_checked(Command::new("dpkg").arg("-x").arg(&deb).arg(&dir))?;
    if !binary.exists() {
        bail!("no bin/busybox in {}", deb.display());
    }
    Ok(binary)
}
