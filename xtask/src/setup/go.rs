//! Go toolchains for the test suite: Debian's own `golang-go` (1.19), installed with apt, and
//! 1.21, 1.22 and 1.23 from bookworm-backports, unpacked into `target/test-tools/go/<version>/`.
//!
//! The backports suite never enters the system's apt sources: with it there, `apt-get install
//! qemu-system-arm` fails (`qemu-utils : Breaks: qemu-system-common`), which breaks vm-test's
//! set-up. A private apt configuration under `target/test-tools/go-apt/` holds its sources,
//! package lists and cache; the packages are `apt-get download`ed and unpacked with `dpkg -x`,
//! as vm-test does with kernels. Nothing is installed into `/` but `golang-go`.
use super::*;

/// Debian bookworm's own Go, from `golang-go`.
const DEBIAN_GO: &str = "1.19";
/// From bookworm-backports: `golang-<v>-go` (compiler, linker, tools) and `golang-<v>-src`
/// (the standard library's source, which every build compiles since Go 1.20).
const BACKPORTS_GO: &[&str] = &["1.21", "1.22", "1.23"];
const BACKPORTS_SUITE: &str = "bookworm-backports";
/// The mirror and keyring the system's own sources use (/etc/apt/sources.list.d/debian.sources).
const MIRROR: &str = "http://deb.debian.org/debian";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// `target/test-tools/go/`: one directory per backports toolchain, and `toolchains.txt`.
pub fn go_dir() -> PathBuf {
    test_tools_dir().join("go")
}

/// `target/test-tools/go/toolchains.txt`: one `<version> <go binary>` line per toolchain, oldest
/// first. The test suite reads it (it cannot depend on xtask), so this list is the only one.
fn go_toolchains_file() -> PathBuf {
    go_dir().join("toolchains.txt")
}

/// Every Go toolchain the tests build with, oldest first: (version, its `go` binary). Where
/// `cargo xtask setup --test-tools` puts them, installed or not.
pub fn go_toolchains() -> Vec<(String, PathBuf)> {
    let dir = go_dir();
    std::iter::once((
        DEBIAN_GO.to_string(),
        PathBuf::from(format!("/usr/lib/go-{DEBIAN_GO}/bin/go")),
    ))
    .chain(
        BACKPORTS_GO
            .iter()
            .map(|v| (v.to_string(), backports_go_binary(&dir, v))),
    )
    .collect()
}

/// Where `dpkg -x` puts a backports toolchain's `go`: the package's own layout, under `dir/<v>`.
/// Its `src`, `api`, `misc` and `test` are relative links into `usr/share/go-<v>`, unpacked
/// alongside, and `go` finds its GOROOT from its own path: no GOROOT needed.
fn backports_go_binary(dir: &Path, version: &str) -> PathBuf {
    dir.join(version)
        .join(format!("usr/lib/go-{version}/bin/go"))
}

fn backports_packages(version: &str) -> Vec<String> {
    vec![
        format!("golang-{version}-go"),
        format!("golang-{version}-src"),
    ]
}

/// Installs every toolchain of [`go_toolchains`] that is missing, checks that each runs and is
/// the version it is listed as, and writes [`go_toolchains_file`]. Downloads only what has no
/// stamp yet; a second run makes no network access.
pub fn install_go_toolchains() -> Result<()> {
    apt_install(&["golang-go"])?;
    let dir = go_dir();
    let missing: Vec<&str> = BACKPORTS_GO
        .iter()
        .copied()
        .filter(|v| !backports_installed(&dir, v))
        .collect();
    if !missing.is_empty() {
        let apt = PrivateApt {
            dir: test_tools_dir().join("go-apt"),
            suite: BACKPORTS_SUITE,
            arch: native_deb_arch()?,
        };
        apt.update()?;
        for version in missing {
            unpack_backports_go(&apt, &dir, version)?;
        }
    }
    let toolchains = go_toolchains();
    for (version, go) in &toolchains {
        check_go(version, go)?;
    }
    let listing: String = toolchains
        .iter()
        .map(|(v, go)| format!("{v} {}\n", go.display()))
        .collect();
    let file = go_toolchains_file();
    if std::fs::read_to_string(&file).ok().as_deref() != Some(listing.as_str()) {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&file, listing)?;
    }
    Ok(())
}

/// The stamp a finished unpack leaves: the .deb files it came from.
fn stamp(dir: &Path, version: &str) -> PathBuf {
    dir.join(format!("{version}.installed"))
}

fn backports_installed(dir: &Path, version: &str) -> bool {
    stamp(dir, version).exists() && backports_go_binary(dir, version).exists()
}

/// Downloads Go `version`'s packages and unpacks them into `dir/<version>`; the stamp is written
/// last, after the toolchain has built and run a program, so an interrupted or broken unpack is
/// redone next time.
fn unpack_backports_go(apt: &PrivateApt, dir: &Path, version: &str) -> Result<()> {
    eprintln!(
        "installing Go {version} from {BACKPORTS_SUITE} into {}",
        dir.display()
    );
    let debs_dir = apt.dir.join("debs").join(version);
    let _ = std::fs::remove_dir_all(&debs_dir);
    let debs = apt.download(&backports_packages(version), &debs_dir)?;
    let tree = dir.join(version);
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    for deb in &debs {
        run_checked(Command::new("dpkg").arg("-x").arg(deb).arg(&tree))?;
    }
    let go = backports_go_binary(dir, version);
    check_go(version, &go)?;
    check_go_builds(&go, &apt.dir.join("check").join(version))?;
    let names: String = debs
        .iter()
        .filter_map(|d| d.file_name())
        .map(|n| format!("{}\n", n.to_string_lossy()))
        .collect();
    std::fs::write(stamp(dir, version), names)?;
    // 130 MB of .debs for three toolchains; the stamp says what they were.
    std::fs::remove_dir_all(&debs_dir)?;
    Ok(())
}

/// `go version` names `version`, and `go env GOROOT` is the tree the binary lives in (not a
/// system Go's, which would build with the wrong standard library).
fn check_go(version: &str, go: &Path) -> Result<()> {
    let output = |args: &[&str]| -> Result<String> {
        let out = Command::new(go)
            .args(args)
            .env("GOTOOLCHAIN", "local")
            .env_remove("GOROOT")
            .output()
            .with_context(|| {
                format!("running {} (cargo xtask setup --test-tools)", go.display())
            })?;
        if !out.status.success() {
            bail!(
                "{} {args:?}: {}",
                go.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let said = output(&["version"])?;
    if !go_version_is(&said, version) {
        bail!("{} says {said:?}, expected Go {version}", go.display());
    }
    let goroot = PathBuf::from(output(&["env", "GOROOT"])?);
    let own = go
        .parent()
        .and_then(Path::parent)
        .context("a go binary lives in <GOROOT>/bin")?;
    if goroot.canonicalize().ok() != own.canonicalize().ok() {
        bail!(
            "{} uses GOROOT {}, not its own {}",
            go.display(),
            goroot.display(),
            own.display()
        );
    }
    Ok(())
}

/// `go version` output such as `go version go1.21.13 linux/amd64` is Go `version` ("1.21").
fn go_version_is(said: &str, version: &str) -> bool {
    said.split_whitespace()
        .nth(2)
        .and_then(|v| v.strip_prefix("go"))
        .is_some_and(|v| v == version || v.starts_with(&format!("{version}.")))
}

/// Builds and runs a small program with `go` in `scratch` (removed afterwards): the unpacked
/// standard library's source must resolve through the package's relative links.
fn check_go_builds(go: &Path, scratch: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch)?;
    std::fs::write(
        scratch.join("main.go"),
        "package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"ok\\n\") }\n",
    )?;
    run_checked(
        Command::new(go)
            .args(["build", "-o", "check", "main.go"])
            .current_dir(scratch)
            .env("GOCACHE", scratch.join("cache"))
            .env("GOPATH", scratch.join("gopath"))
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GO111MODULE", "off")
            .env("CGO_ENABLED", "0")
            .env_remove("GOROOT")
            .env_remove("GOFLAGS"),
    )?;
    let out = Command::new(scratch.join("check"))
        .output()
        .context("running the program Go built")?;
    if String::from_utf8_lossy(&out.stdout).trim() != "ok" {
        bail!("the program {} built does not run: {out:?}", go.display());
    }
    // The build cache is read-only files in read-only directories (Go's module cache habit).
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(scratch)
        .status();
    std::fs::remove_dir_all(scratch)?;
    if let Some(parent) = scratch.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

fn native_deb_arch() -> Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// apt with its own sources, package lists and cache under `dir`, for one suite of the Debian
/// mirror: `update` and `download` only, never `install`, so the system's package state is
/// never touched (dpkg's status file is only read).
struct PrivateApt {
    dir: PathBuf,
    suite: &'static str,
    /// Debian architecture of the package lists (the host's: the toolchains run here).
    arch: String,
}

impl PrivateApt {
    fn sources_file(&self) -> PathBuf {
        self.dir.join("sources.sources")
    }

    /// deb822 sources for the suite alone, Packages indices only (no translations, no DEP-11).
    fn sources(&self) -> String {
        format!(
            "Types: deb\nURIs: {MIRROR}\nSuites: {}\nComponents: main\nArchitectures: {}\n\
             Targets: Packages\nSigned-By: {KEYRING}\n",
            self.suite, self.arch
        )
    }

    /// `-o` options that point apt at this configuration instead of the system's sources,
    /// pinning and lists. The sources file must end in `.sources` for apt to read it as deb822.
    fn options(&self, root: bool) -> Vec<String> {
        let mut options = vec![
            format!("Dir::Etc::SourceList={}", self.sources_file().display()),
            "Dir::Etc::SourceParts=/dev/null".into(),
            "Dir::Etc::Preferences=/dev/null".into(),
            "Dir::Etc::PreferencesParts=/dev/null".into(),
            format!("Dir::State::Lists={}", self.dir.join("lists").display()),
            format!("Dir::Cache={}", self.dir.join("cache").display()),
        ];
        // As root, apt downloads as the `_apt` user, who cannot write to our directories: it
        // falls back to root with a warning. Say so up front.
        if root {
            options.push("APT::Sandbox::User=root".into());
        }
        options.into_iter().flat_map(|o| ["-o".into(), o]).collect()
    }

    fn apt_get(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("apt-get");
        cmd.args(self.options(is_root()))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    fn update(&self) -> Result<()> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(self.dir.join(sub))?;
        }
        std::fs::write(self.sources_file(), self.sources())?;
        run_checked(&mut self.apt_get(&["update", "-q"]))
    }

    /// `apt-get download`s `packages` into `into`; the .deb files, one per package.
    fn download(&self, packages: &[String], into: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(into)?;
        let mut args = vec!["download", "-q"];
        args.extend(packages.iter().map(String::as_str));
        run_checked(self.apt_get(&args).current_dir(into))?;
        let mut debs = Vec::new();
        for package in packages {
            let prefix = format!("{package}_");
            let deb = std::fs::read_dir(into)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.starts_with(&prefix) && n.ends_with(".deb")
                    })
                })
                .with_context(|| format!("apt-get download left no {package} .deb"))?;
            debs.push(deb);
        }
        Ok(debs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apt() -> PrivateApt {
        PrivateApt {
            dir: PathBuf::from("/w/target/test-tools/go-apt"),
            suite: BACKPORTS_SUITE,
            arch: "amd64".into(),
        }
    }

    #[test]
    fn private_apt_reads_nothing_of_the_system_configuration_but_dpkg_status() {
        let options = apt().options(false);
        let values: Vec<&str> = options
            .chunks(2)
            .map(|pair| {
                assert_eq!(pair[0], "-o");
                pair[1].as_str()
            })
            .collect();
        assert_eq!(
            values,
            [
                "Dir::Etc::SourceList=/w/target/test-tools/go-apt/sources.sources",
                "Dir::Etc::SourceParts=/dev/null",
                "Dir::Etc::Preferences=/dev/null",
                "Dir::Etc::PreferencesParts=/dev/null",
                "Dir::State::Lists=/w/target/test-tools/go-apt/lists",
                "Dir::Cache=/w/target/test-tools/go-apt/cache",
            ]
        );
        assert!(
            apt()
                .options(true)
                .ends_with(&["-o".into(), "APT::Sandbox::User=root".into()])
        );
    }

    #[test]
    fn private_sources_name_only_backports_on_the_system_mirror() {
        let sources = apt().sources();
        assert!(
            sources.contains("Suites: bookworm-backports\n"),
            "{sources}"
        );
        assert!(sources.contains("URIs: http://deb.debian.org/debian\n"));
        assert!(sources.contains("Architectures: amd64\n"));
        assert!(sources.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"));
        assert_eq!(sources.matches("Suites:").count(), 1);
    }

    #[test]
    fn toolchains_are_debians_go_then_the_unpacked_backports_oldest_first() {
        let toolchains = go_toolchains();
        let versions: Vec<&str> = toolchains.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(versions, ["1.19", "1.21", "1.22", "1.23"]);
        assert_eq!(toolchains[0].1, Path::new("/usr/lib/go-1.19/bin/go"));
        assert_eq!(
            toolchains[3].1,
            workspace_root().join("target/test-tools/go/1.23/usr/lib/go-1.23/bin/go")
        );
        assert_eq!(
            backports_packages("1.22"),
            ["golang-1.22-go", "golang-1.22-src"]
        );
    }

    #[test]
    fn go_version_matches_the_minor_release_only() {
        assert!(go_version_is("go version go1.21.13 linux/amd64", "1.21"));
        assert!(go_version_is("go version go1.23 linux/arm64", "1.23"));
        assert!(!go_version_is("go version go1.21.13 linux/amd64", "1.2"));
        assert!(!go_version_is("go version go1.19.8 linux/amd64", "1.21"));
        assert!(!go_version_is("", "1.21"));
    }
}
