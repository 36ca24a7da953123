//! Real split debug files, made with gcc and objcopy as distributions make them.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::process::ProcessTable;
use crate::symbolize::Symbolizer;

const PROGRAM: &str = r#"
static volatile unsigned long sink;
__attribute__((noinline)) static void kalypso_debuginfo_hidden_static(void) {
    for (;;) sink++;
}
int main(void) { kalypso_debuginfo_hidden_static(); return 0; }
"#;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A program stripped of its symbols, its debug file, and the build id, as `dh_strip` leaves them.
struct Split {
    dir: tempfile::TempDir,
    binary: PathBuf,
    debug: PathBuf,
    build_id: BuildId,
}

fn split(debuglink: bool) -> Split {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("p.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let binary = dir.path().join("p");
    let debug = dir.path().join("p.debug");
    run(Command::new("gcc")
        .args([
            "-O0",
            "-g",
            "-fno-omit-frame-pointer",
            "-Wl,--build-id",
            "-o",
        ])
        .arg(&binary)
        .arg(&src));
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&binary)
        .arg(&debug));
    run(Command::new("objcopy").arg("--strip-all").arg(&binary));
    if debuglink {
        run(Command::new("objcopy")
            .current_dir(dir.path())
            .arg("--add-gnu-debuglink=p.debug")
            .arg(&binary));
    }
    let build_id = crate::elf::read_build_id(&File::open(&binary).unwrap())
        .unwrap()
        .expect("gcc wrote a build id");
    Split {
        dir,
        binary,
        debug,
        build_id,
    }
}

/// The spinning program, killed however the test ends.
struct Reap(std::process::Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The mapping of `binary`'s text in process `pid`, and its object, as the agent's table sees them.
fn mapped_program(
    pid: Pid,
    binary: &Path,
) -> (
    crate::process::Mapping,
    std::sync::Arc<crate::process::ObjectFile>,
) {
    let mut table = ProcessTable::default();
    table.refresh(pid).unwrap();
    let info = table.get(pid).unwrap();
    let mapping = info
        .mappings
        .iter()
        .find(|m| m.object.as_ref().is_some_and(|o| o.path == binary))
        .expect("the program's text is mapped")
        .clone();
    let object = mapping.object.clone().unwrap();
    (mapping, object)
}

/// Every fourth file offset of the mapping that lies in the program's executable code.
fn code_offsets(mapping: &crate::process::Mapping, debug: &DebugFile) -> Vec<FileOffset> {
    (mapping.offset.0..mapping.offset.0 + (mapping.end.0 - mapping.start.0))
        .step_by(4)
        .map(FileOffset)
        .filter(|off| debug.virt_offset(*off).is_some())
        .collect()
}

fn place(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

#[test]
fn the_debug_link_names_the_file_and_its_crc() {
    let s = split(true);
    let (name, crc) = debug_link(&File::open(&s.binary).unwrap()).unwrap();
    assert_eq!(name, "p.debug");
    assert_eq!(file_crc32(&s.debug), Some(crc));
    assert!(debug_link(&File::open(&s.debug).unwrap()).is_none());
}

#[test]
fn found_by_build_id_in_a_debug_directory_without_a_debug_link() {
    let s = split(false);
    let dirs = [s.dir.path().join("host-debug")];
    let hex = s.build_id.to_string();
    let at = dirs[0].join(format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..]));
    place(&s.debug, &at);
    let file = File::open(&s.binary).unwrap();
    let root = s.dir.path().join("root");
    let found = find_in(
        &root,
        &dirs,
        Path::new("/usr/bin/p"),
        &file,
        Some(&s.build_id),
    );
    assert_eq!(found, Some(at));
}

#[test]
fn found_by_debug_link_under_the_process_root_and_checked_by_crc() {
    let s = split(true);
    let root = s.dir.path().join("root");
    let debug_dir = root.join("usr/lib/debug");
    let file = File::open(&s.binary).unwrap();
    let at = debug_dir.join("usr/bin/p.debug");
    place(&s.debug, &at);
    let found = find_in(
        &root,
        std::slice::from_ref(&debug_dir),
        Path::new("/usr/bin/p"),
        &file,
        None,
    );
    assert_eq!(found.as_deref(), Some(at.as_path()));
    // A different file of that name (another build's) is not taken.
    std::fs::write(&at, b"not the debug file").unwrap();
    assert_eq!(
        find_in(&root, &[debug_dir], Path::new("/usr/bin/p"), &file, None),
        None
    );
}

#[test]
fn a_stripped_process_is_symbolized_from_its_debug_file_after_it_exits() {
    let s = split(true);
    // Beside the binary, where the debug link's first candidate is.
    let child = Reap(Command::new(&s.binary).spawn().unwrap());
    let pid = Pid(child.0.id());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (mapping, object) = mapped_program(pid, &s.binary);
    let debug = object.debug.as_ref().expect("its debug file is found");
    // Reached through the process's own root, as for a process in another mount namespace.
    let rel = s.binary.with_file_name("p.debug");
    let expected = Path::new(&format!("/proc/{}/root", pid.0)).join(rel.strip_prefix("/").unwrap());
    assert_eq!(debug.found, expected);
    // Held open: the process exits before its samples are symbolized, as a short-lived one does,
    // and the path under its root goes with it; the file itself is deleted too (a package
    // upgrade), so that nothing but the open file can give the names.
    drop(child);
    assert!(!expected.exists());
    std::fs::remove_file(&rel).unwrap();
    // The running loop's address, read from the debug file's symbol table.
    let offsets = code_offsets(&mapping, debug);
    let mut sym = Symbolizer::new();
    let frames = sym.user(&object, &offsets);
    assert!(
        frames
            .iter()
            .flat_map(|f| f.iter())
            .any(|f| &*f.function == "kalypso_debuginfo_hidden_static"),
        "the static function's name, which only the debug file has"
    );
}

#[test]
fn a_file_crc_is_the_standard_crc32_of_all_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("check");
    std::fs::write(&small, b"123456789").unwrap();
    assert_eq!(file_crc32(&small), Some(0xcbf4_3926));
    // Longer than one read buffer: every chunk counts.
    let big = dir.path().join("big");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&big, &bytes).unwrap();
    assert_eq!(file_crc32(&big), Some(crc32fast::hash(&bytes)));
    assert_eq!(file_crc32(dir.path()), None, "a directory has no CRC");
    assert_eq!(file_crc32(&dir.path().join("missing")), None);
}

#[test]
fn the_node_root_is_pid_1s_and_else_the_parents() {
    let proc = tempfile::tempdir().unwrap();
    let p = proc.path();
    std::fs::create_dir_all(p.join("42")).unwrap();
    std::fs::write(p.join("42/comm"), "conmon\n").unwrap();
    std::os::unix::fs::symlink("/", p.join("42/root")).unwrap();
    // PID 1 closed to us (here: absent): the parent's root, and the line says why.
    let found = resolve_node_debug_dir(p, 42);
    assert_eq!(found.dir, Some(p.join("42/root/usr/lib/debug")));
    assert!(found.how.contains("conmon"), "{}", found.how);
    assert!(found.how.contains(&p.join("1/root").display().to_string()));
    // No parent in this PID namespace, or the parent is PID 1: nothing searched, said so.
    for parent in [0, 1] {
        let none = resolve_node_debug_dir(p, parent);
        assert_eq!(none.dir, None);
        assert!(none.how.starts_with("node debug files are not searched"));
    }
    // A parent whose root cannot be read either.
    let none = resolve_node_debug_dir(p, 43);
    assert_eq!(none.dir, None);
    assert!(none.how.contains(&p.join("43/root").display().to_string()));
    // PID 1 readable: its root, whatever the parent.
    std::fs::create_dir_all(p.join("1")).unwrap();
    std::os::unix::fs::symlink("/", p.join("1/root")).unwrap();
    assert_eq!(
        resolve_node_debug_dir(p, 42).dir,
        Some(p.join("1/root/usr/lib/debug"))
    );
}

/// On this machine the node's root, however it is reached, is the test's own `/`.
#[test]
fn the_node_debug_dir_here_is_this_machines() {
    let found = node_debug_dir();
    let dir = found
        .dir
        .as_ref()
        .unwrap_or_else(|| panic!("{}", found.how));
    let root = dir.parent().unwrap().parent().unwrap().parent().unwrap();
    assert_eq!(
        std::fs::read_link(root).unwrap(),
        Path::new("/"),
        "{}",
        found.how
    );
}

/// A process in a mount namespace of its own whose `/usr/lib/debug` is empty, as a container's is,
/// and its debug file only in this machine's `/usr/lib/debug/.build-id`: only the node's debug
/// directory can give the names.
#[test]
fn a_containers_stripped_binary_is_named_from_the_nodes_debug_directory() {
    // It writes to this machine's /usr/lib/debug and mounts: root only (fails, not skips, in CI).
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("KALYPSO_REQUIRE_ROOT_TESTS").is_none(),
            "this test must run as root"
        );
        eprintln!("skipped: needs root to install a debug file and mount");
        return;
    }
    let s = split(false);
    let hex = s.build_id.to_string();
    let node = Path::new("/usr/lib/debug");
    // Removed however the test ends; what it creates, it removes, deepest first.
    struct Installed(Vec<PathBuf>);
    impl Drop for Installed {
        fn drop(&mut self) {
            for p in self.0.iter().rev() {
                let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir(p));
            }
        }
    }
    let at = node.join(format!(".build-id/{}/{}.debug", &hex[..2], &hex[2..]));
    let mut installed = Installed(Vec::new());
    let mut missing: Vec<PathBuf> = at
        .ancestors()
        .skip(1)
        .take_while(|a| !a.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    for d in missing {
        std::fs::create_dir(&d).unwrap();
        installed.0.push(d);
    }
    assert!(!at.exists(), "{} is already installed", at.display());
    std::fs::copy(&s.debug, &at).unwrap();
    installed.0.push(at.clone());

    // unshare execs sh, which mounts and execs the program: the child's PID is the program's.
    let child = Reap(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs kalypso-empty /usr/lib/debug && exec \"$0\"")
            .arg(&s.binary)
            .spawn()
            .unwrap(),
    );
    let pid = Pid(child.0.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{}/exe", pid.0))
        .ok()
        .as_deref()
        != Some(&s.binary)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the program did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let own = PathBuf::from(format!("/proc/{}/root", pid.0)).join(at.strip_prefix("/").unwrap());
    assert!(!own.exists(), "the process sees the node's /usr/lib/debug");

    let (mapping, object) = mapped_program(pid, &s.binary);
    let debug = object.debug.as_ref().expect("its debug file is found");
    let node_dir = node_debug_dir().dir.clone().unwrap();
    assert_eq!(
        debug.found,
        node_dir.join(at.strip_prefix(node).unwrap()),
        "{}",
        node_debug_dir().how
    );
    let offsets = code_offsets(&mapping, debug);
    let frames = Symbolizer::new().user(&object, &offsets);
    assert!(
        frames
            .iter()
            .flat_map(|f| f.iter())
            .any(|f| &*f.function == "kalypso_debuginfo_hidden_static"),
        "the static function's name, which only the node's debug file has"
    );
}
