//! OTel resource attributes of one sampled process (`service.name`, `process.executable.*`,
//! `container.id`, `host.arch`), read from /proc. Everything here is best effort: a process can
//! exit or deny access between sampling and export, and a missing attribute must never drop its
//! samples.
use std::path::{Path, PathBuf};

/// Prefixes that container runtimes put before the id in a cgroup directory name: systemd scopes
/// (`docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`) and
/// podman's cgroupfs layout (`/libpod_parent/libpod-<id>`).
const RUNTIME_PREFIXES: &[&str] = &["docker-", "cri-containerd-", "crio-", "libpod-"];

/// Docker, containerd, cri-o and podman all use 64 lowercase hex digits (a sha256) as the id.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id named by one path component of a cgroup path, if any.
fn id_in_component(component: &str) -> Option<&str> {
    // containerd's systemd driver on cgroupfs names leaves `<slice>:cri-containerd:<id>`.
    let name = component.rsplit(':').next().unwrap_or(component);
    let name = name.strip_suffix(".scope").unwrap_or(name);
    if is_container_id(name) {
        // `/docker/<id>` and kubelet's cgroupfs `/kubepods/<qos>/pod<uid>/<id>`.
        return Some(name);
    }
    // `crio-conmon-<id>` / `libpod-conmon-<id>` hold the runtime's monitor process, not the
    // container; their id is the container's, so counting them would mislabel conmon's samples.
    if name.contains("conmon") {
        return None;
    }
    RUNTIME_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .filter(|id| is_container_id(id))
}

/// The container id in `/proc/PID/cgroup` text (cgroup v1 `N:controllers:/path` lines or the v2
/// `0::/path` line), or None for a process outside a container.
pub fn container_id_from_cgroup(cgroup_file_text: &str) -> Option<String> {
    cgroup_file_text.lines().find_map(|line| {
        // The path is everything after the second ':' (it may itself contain ':').
        let path = line.splitn(3, ':').nth(2)?;
        // The innermost id wins: in nested setups (kind: `/docker/<node>/kubepods/.../<id>`) the
        // process belongs to the deepest container. Components after the id (`/init.scope`,
        // podman's `/container`) are ignored.
        path.split('/')
            .filter_map(id_in_component)
            .next_back()
            .map(str::to_owned)
    })
}

/// Parses OTEL_RESOURCE_ATTRIBUTES: `k1=v1,k2=v2`, keys and values trimmed, values percent-decoded
/// (the spec uses W3C Baggage octet encoding). Empty members (`a=1,`) are skipped, as the OTel SDKs
/// tolerate them; a member without `=` or with an empty key is an error naming it. The same syntax
/// serves OTEL_EXPORTER_OTLP_HEADERS, so errors do not name the variable: callers prefix it.
pub fn parse_otel_resource_attributes(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut attrs = Vec::new();
    for member in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let malformed = |why: &str| format!("malformed pair {member:?}: {why}");
        let (key, value) = member
            .split_once('=')
            .ok_or_else(|| malformed("expected key=value"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(malformed("empty key"));
        }
        let value = percent_decode(value.trim()).map_err(|why| malformed(&why))?;
        attrs.push((key.to_owned(), value));
    }
    Ok(attrs)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(format!("bad percent escape at byte {i}"));
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "value is not UTF-8 after percent-decoding".to_owned())
}

/// The service name a process gave itself, from its NUL-separated `/proc/PID/environ`:
/// OTEL_SERVICE_NAME if set and non-empty, else `service.name` in its own OTEL_RESOURCE_ATTRIBUTES.
/// (environ is the environment the process started with; later setenv calls are not visible.)
pub fn service_name_from_environ(environ: &[u8]) -> Option<String> {
    // The first definition wins, as with getenv(3).
    let var = |name: &[u8]| {
        environ
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(name)?.strip_prefix(b"="))
            .map(String::from_utf8_lossy)
    };
    if let Some(name) = var(b"OTEL_SERVICE_NAME") {
        let name = name.trim();
        if !name.is_empty() {
            return Some(name.to_owned());
        }
    }
    // A malformed variable is the process's problem; fall back to the executable name rather
    // than fail. A key repeated in the list takes its last value, as in the OTel SDKs.
    parse_otel_resource_attributes(&var(b"OTEL_RESOURCE_ATTRIBUTES")?)
        .ok()?
        .into_iter()
        .rev()
        .find(|(key, _)| key == "service.name")
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// `host.arch` as the OTel semantic conventions spell it (Go's GOARCH names, not Rust's).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm32",
        "powerpc" => "ppc32",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// The `service.name` of every kernel thread (`kworker/3:1H`, `ksoftirqd/0`, …): one series for the
/// kernel's own work on a node, not one per thread name.
pub const KERNEL_SERVICE_NAME: &str = "kernel";

/// The pod uid in a kubelet cgroup path: `pod<uid>` (cgroupfs driver,
/// `/kubepods/burstable/pod5c5b1e3e-2a3c-…/<id>`) or `kubepods[-<qos>]-pod<uid_>.slice` (systemd
/// driver, dashes spelled `_`). A uid is a UUID, or 32 hex digits for a static pod (its config
/// hash). Only paths under a `kubepods` directory count; the innermost pod wins, as for ids.
pub fn pod_uid_from_cgroup(cgroup_file_text: &str) -> Option<String> {
    cgroup_file_text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        let mut under_kubepods = false;
        let mut found = None;
        for component in path.split('/') {
            // containerd's systemd driver on cgroupfs: `kubepods-pod<uid_>.slice:cri-containerd:<id>`.
            let name = component.split(':').next().unwrap_or(component);
            if name.starts_with("kubepods") {
                under_kubepods = true;
            }
            if !under_kubepods {
                continue;
            }
            let name = name.strip_suffix(".slice").unwrap_or(name);
            let candidate = match name.strip_prefix("pod") {
                Some(rest) => Some(rest),
                None => name.rfind("-pod").map(|at| &name[at + 4..]),
            };
            if let Some(uid) = candidate
                .map(|c| c.replace('_', "-"))
                .filter(|u| is_pod_uid(u))
            {
                found = Some(uid);
            }
        }
        found
    })
}

fn is_pod_uid(s: &str) -> bool {
    let hex = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
    match s.len() {
        32 => s.bytes().all(hex),
        36 => s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => hex(b),
        }),
        _ => false,
    }
}

/// The `service.name` rule. A name the process declared (`OTEL_SERVICE_NAME`, or `service.name`
/// in its `OTEL_RESOURCE_ATTRIBUTES`) always wins. Kernel threads are [`KERNEL_SERVICE_NAME`].
/// A process in a container that declared none gets **no** `service.name`: the collector's
/// k8sattributes processor fills it from the pod (its labels, annotations, then the workload
/// name) only where it is absent, so a name made up here would hide the right one (every JVM pod
/// would be `java`). A host process gets a readable fallback: its executable's file name, else
/// its `comm`, else the SDKs' `unknown_service`.
pub fn service_name(
    declared: Option<String>,
    kernel_thread: bool,
    in_container: bool,
    executable_name: Option<&str>,
    comm: &str,
) -> Option<String> {
    if declared.is_some() {
        return declared;
    }
    if kernel_thread {
        return Some(KERNEL_SERVICE_NAME.to_owned());
    }
    if in_container {
        return None;
    }
    Some(
        executable_name
            .filter(|name| !name.is_empty())
            .or(Some(comm).filter(|name| !name.is_empty()))
            .unwrap_or("unknown_service")
            .to_owned(),
    )
}

/// The per-process part of an OTLP resource (`process.pid`, `service.name`,
/// `process.executable.name`/`.path`, `container.id`, `k8s.pod.uid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessResource {
    pub pid: u32,
    /// By [`service_name`]; `None` for a container's process that declared none.
    pub service_name: Option<String>,
    pub executable_name: Option<String>,
    pub executable_path: Option<String>,
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// `PF_KTHREAD` in `/proc/PID/stat`'s flags (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Reads a process's resource from /proc/PID/{stat,exe,cgroup,environ}. Any read failure
/// (exited, no permission) leaves that field None; `comm` (the name the sample carried) is the
/// last fallback for a host process's `service.name`.
pub fn read_process_resource(pid: u32, comm: &str) -> ProcessResource {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let kernel_thread = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|stat| u64::from(stat.flags) & PF_KTHREAD != 0);
    // The path as seen in the process's own mount namespace, which is what users recognise. A
    // binary replaced or deleted since exec reads as "<path> (deleted)"; the path is still the
    // useful part.
    let executable_path = std::fs::read_link(dir.join("exe")).ok().map(|target| {
        let target = target.to_string_lossy();
        target
            .strip_suffix(" (deleted)")
            .unwrap_or(&target)
            .to_owned()
    });
    let executable_name = executable_path
        .as_deref()
        .and_then(|path| Path::new(path).file_name())
        .map(|name| name.to_string_lossy().into_owned());
    let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    let container_id = container_id_from_cgroup(&cgroup);
    let pod_uid = pod_uid_from_cgroup(&cgroup);
    let declared = std::fs::read(dir.join("environ"))
        .ok()
        .and_then(|environ| service_name_from_environ(&environ));
    let service_name = service_name(
        declared,
        kernel_thread,
        container_id.is_some() || pod_uid.is_some(),
        executable_name.as_deref(),
        comm,
    );
    ProcessResource {
        pid,
        service_name,
        executable_name,
        executable_path,
        container_id,
        pod_uid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    /// Fills a cgroup-file template: `<id>` the container id, `<id2>` another one, `<pod>` a pod
    /// directory (`pod<uid>`), `<pod_>` its systemd spelling (dashes become underscores).
    fn cgroup(template: &str) -> String {
        template
            .replace("<id2>", ID2)
            .replace("<id>", ID)
            .replace("<pod_>", "pod5c5b1e3e_2a3c_4d56_8f3a_1b2c3d4e5f60")
            .replace("<pod>", "pod5c5b1e3e-2a3c-4d56-8f3a-1b2c3d4e5f60")
    }

    #[test]
    fn container_ids_from_runtime_cgroup_shapes() {
        for template in [
            // docker, cgroupfs driver, cgroup v1: one line per controller hierarchy.
            "12:memory:/docker/<id>\n11:cpu,cpuacct:/docker/<id>\n1:name=systemd:/docker/<id>\n",
            "0::/system.slice/docker-<id>.scope\n",
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-<pod_>.slice/\
             cri-containerd-<id>.scope\n",
            "0::/system.slice/containerd.service/kubepods-<pod_>.slice:cri-containerd:<id>",
            "4:pids:/kubepods/burstable/<pod>/<id>\n",
            "0::/kubepods.slice/kubepods-<pod_>.slice/crio-<id>.scope\n",
            "0::/kubepods/besteffort/<pod>/crio-<id>\n",
            "0::/machine.slice/libpod-<id>.scope/container\n",
            "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-<id>.scope",
            "3:cpuset:/libpod_parent/libpod-<id>\n",
            "0::/docker/<id>/system.slice/nginx.service\n",
            // kind: a pod's container inside a node container; the innermost id is the process's.
            "0::/docker/<id2>/kubepods/besteffort/<pod>/<id>\n",
            // cgroup v1 + v2 hybrid: the v2 line is the root, a v1 line has the id.
            "0::/\n1:name=systemd:/docker/<id>\n",
        ] {
            let text = cgroup(template);
            let found = container_id_from_cgroup(&text);
            assert_eq!(found.as_deref(), Some(ID), "{text}");
        }
    }

    #[test]
    fn no_container_id_outside_containers() {
        for template in [
            "",
            "0::/\n",
            "0::/user.slice/user-1000.slice/session-2.scope\n",
            "0::/system.slice/sshd.service\n",
            "0::/kubepods.slice/kubepods-<pod_>.slice/crio-conmon-<id>.scope\n",
            "0::/machine.slice/libpod-conmon-<id>.scope\n",
            "0::/docker/0123456789abcdef\n",
            "0::/system.slice/docker-<id>0.scope\n",
            "0::/system.slice/session-<id>.scope\n",
            "not a cgroup line <id>\n",
        ] {
            let text = cgroup(template);
            assert_eq!(container_id_from_cgroup(&text), None, "{text}");
        }
        let upper = format!("0::/docker/{}", ID.to_uppercase());
        assert_eq!(container_id_from_cgroup(&upper), None);
    }

    #[test]
    fn otel_resource_attributes() {
        let parse = |s| parse_otel_resource_attributes(s);
        let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("  "), Ok(vec![]));
        let want = vec![
            kv("service.name", "a b,c"),
            kv("x", "y=z"),
            kv("e", ""),
            kv("k", "café"),
        ];
        assert_eq!(
            parse(" service.name = a%20b%2Cc ,x=y=z,e=, k=caf%C3%A9"),
            Ok(want)
        );
        for bad in ["a=1,novalue", "=v", "k=%zz", "k=%4", "k=%ff"] {
            let err = parse(bad).unwrap_err();
            let member = bad.rsplit(',').next().unwrap();
            assert!(err.contains(&format!("{member:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn service_name_from_process_environment() {
        let attrs = "OTEL_RESOURCE_ATTRIBUTES=team=a,service.name=from%20attrs";
        let name = |vars: &[&str]| service_name_from_environ(vars.join("\0").as_bytes());
        assert_eq!(
            name(&["PATH=/", "OTEL_SERVICE_NAME=svc", attrs]).unwrap(),
            "svc"
        );
        assert_eq!(
            name(&["OTEL_SERVICE_NAME=", attrs, ""]).unwrap(),
            "from attrs"
        );
        assert_eq!(
            name(&["OTEL_SERVICE_NAME_X=no", attrs]).unwrap(),
            "from attrs"
        );
        assert_eq!(
            name(&["OTEL_SERVICE_NAME=a", "OTEL_SERVICE_NAME=b"]).unwrap(),
            "a"
        );
        assert_eq!(
            name(&["PATH=/bin", "OTEL_RESOURCE_ATTRIBUTES=team=a"]),
            None
        );
        assert_eq!(name(&["OTEL_RESOURCE_ATTRIBUTES=service.name=x,bad"]), None);
        assert_eq!(name(&["OTEL_RESOURCE_ATTRIBUTES=service.name="]), None);
        assert_eq!(name(&[]), None);
    }

    #[test]
    fn host_arch_uses_semconv_names() {
        let want = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            _ => return,
        };
        assert_eq!(host_arch(), want);
    }

    #[test]
    fn resource_of_this_process() {
        let me = read_process_resource(std::process::id(), "fallback");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.executable_path.as_deref(), exe.to_str());
        let exe_name = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(me.executable_name.as_deref(), Some(exe_name));
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(me.container_id, container_id_from_cgroup(&cgroup));
        let environ = std::fs::read("/proc/self/environ").unwrap();
        let want = service_name_from_environ(&environ)
            .or_else(|| me.container_id.is_none().then(|| exe_name.to_owned()));
        assert_eq!(me.service_name, want);
        assert_eq!(me.pod_uid, pod_uid_from_cgroup(&cgroup));
    }

    #[test]
    fn service_name_of_a_child_comes_from_its_environment() {
        use std::process::Command;
        let spawn = |cmd: &mut Command| cmd.arg("30").spawn().expect("spawn sleep");
        let mut named = spawn(Command::new("sleep").env("OTEL_SERVICE_NAME", "kalypso-test"));
        let mut plain = spawn(
            Command::new("sleep")
                .env_remove("OTEL_SERVICE_NAME")
                .env_remove("OTEL_RESOURCE_ATTRIBUTES"),
        );
        // spawn() returns once exec is past its point of no return, which is before the kernel
        // has set up the new program's environment: /proc/PID/environ reads empty until then.
        for child in [&named, &plain] {
            let environ = format!("/proc/{}/environ", child.id());
            for _ in 0..200 {
                if std::fs::read(&environ).is_ok_and(|e| !e.is_empty()) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let named_res = read_process_resource(named.id(), "fallback");
        let plain_res = read_process_resource(plain.id(), "fallback");
        for child in [&mut named, &mut plain] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_eq!(named_res.service_name.as_deref(), Some("kalypso-test"));
        assert_eq!(plain_res.executable_name.as_deref(), Some("sleep"));
        // A host process (unless the tests themselves run in a container).
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let want = container_id_from_cgroup(&cgroup)
            .is_none()
            .then_some("sleep");
        assert_eq!(plain_res.service_name.as_deref(), want);
    }

    #[test]
    fn unreadable_process_falls_back() {
        // Above the kernel's PID_MAX_LIMIT (2^22), so never a live process.
        let gone = read_process_resource(u32::MAX, "comm-name");
        let none = (
            &gone.executable_name,
            &gone.executable_path,
            &gone.container_id,
        );
        assert_eq!(none, (&None, &None, &None));
        assert_eq!(
            (gone.pid, gone.service_name.as_deref()),
            (u32::MAX, Some("comm-name"))
        );
        let unnamed = read_process_resource(u32::MAX, "");
        assert_eq!(unnamed.service_name.as_deref(), Some("unknown_service"));
    }

    #[test]
    fn kernel_threads_share_one_service_name() {
        // kthreadd is pid 2 in every pid namespace that sees the kernel's threads.
        let Ok(comm) = std::fs::read_to_string("/proc/2/comm") else {
            eprintln!("skipped: no pid 2 here");
            return;
        };
        if comm.trim() != "kthreadd" {
            eprintln!("skipped: pid 2 is not kthreadd (a pid namespace)");
            return;
        }
        let kthreadd = read_process_resource(2, "kthreadd");
        assert_eq!(kthreadd.service_name.as_deref(), Some(KERNEL_SERVICE_NAME));
        assert_eq!(kthreadd.executable_path, None);
    }

    #[test]
    fn the_service_name_rule() {
        let declared = || Some("checkout".to_owned());
        // (declared, kernel thread, in a container, exe, comm) -> name
        assert_eq!(
            service_name(declared(), false, true, Some("java"), "java"),
            declared()
        );
        assert_eq!(
            service_name(declared(), true, false, None, "kworker/0:1"),
            declared()
        );
        assert_eq!(
            service_name(None, true, false, None, "kworker/3:1H").as_deref(),
            Some("kernel")
        );
        assert_eq!(service_name(None, false, true, Some("java"), "java"), None);
        assert_eq!(
            service_name(None, false, false, Some("containerd"), "containerd").as_deref(),
            Some("containerd")
        );
        assert_eq!(
            service_name(None, false, false, None, "exe-unreadable").as_deref(),
            Some("exe-unreadable")
        );
        assert_eq!(
            service_name(None, false, false, None, "").as_deref(),
            Some("unknown_service")
        );
    }

    #[test]
    fn pod_uids_from_kubelet_cgroup_shapes() {
        const UID: &str = "5c5b1e3e-2a3c-4d56-8f3a-1b2c3d4e5f60";
        for template in [
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-<pod_>.slice/\
             cri-containerd-<id>.scope\n",
            "0::/kubepods.slice/kubepods-<pod_>.slice/crio-<id>.scope\n",
            "0::/system.slice/containerd.service/kubepods-<pod_>.slice:cri-containerd:<id>",
            "4:pids:/kubepods/burstable/<pod>/<id>\n",
            "0::/kubepods/besteffort/<pod>/crio-<id>\n",
            // A pod's sandbox or a process directly in the pod's cgroup.
            "0::/kubepods/<pod>\n",
            // kind: the node is a container; the pod is inside it.
            "0::/docker/<id2>/kubepods/besteffort/<pod>/<id>\n",
            "12:memory:/kubepods/burstable/<pod>/<id>\n0::/\n",
        ] {
            let text = cgroup(template);
            assert_eq!(pod_uid_from_cgroup(&text).as_deref(), Some(UID), "{text}");
        }
        // A static pod's uid is its config hash: 32 hex digits.
        let hash = "0::/kubepods/burstable/pod0123456789abcdef0123456789abcdef/<id>\n";
        assert_eq!(
            pod_uid_from_cgroup(&cgroup(hash)).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        for template in [
            "",
            "0::/\n",
            "0::/docker/<id>\n",
            "0::/system.slice/podman.service\n",
            // Not under kubepods.
            "0::/machine.slice/<pod>/<id>\n",
            "0::/kubepods/burstable/pod1234/<id>\n",
            "0::/kubepods/burstable/pod5C5B1E3E-2A3C-4D56-8F3A-1B2C3D4E5F60/<id>\n",
            "0::/kubepods/burstable/pod5c5b1e3e-2a3c-4d56-8f3a-1b2c3d4e5f6/<id>\n",
        ] {
            let text = cgroup(template);
            assert_eq!(pod_uid_from_cgroup(&text), None, "{text}");
        }
    }
}
