//! The rendered DaemonSet's pod, turned into `podman run` arguments: what the kubelet would ask of
//! the runtime, read from `helm template` output rather than kept as a copy here. Anything the pod
//! asks for that this translation does not know is an error, not silently dropped.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// What the pod spec cannot say about this machine.
pub struct Host {
    /// `spec.nodeName` for `fieldRef` env vars.
    pub node_name: String,
    /// emptyDir volumes become fresh directories here (as the kubelet makes them, mode 0777).
    pub scratch: PathBuf,
    /// The seccomp profile that stands for `RuntimeDefault` (the runtime's own).
    pub runtime_default_seccomp: SeccompDefault,
}

/// What `RuntimeDefault` means on the runtime being imitated.
#[derive(Clone, Debug)]
pub enum SeccompDefault {
    /// podman's own default (containers-common), what CRI-O and podman nodes apply.
    Podman,
    /// A profile file: containerd's RuntimeDefault, say.
    File(PathBuf),
}

#[derive(Debug)]
pub struct PodmanSpec {
    pub image: String,
    /// Everything between `podman run` and the image.
    pub args: Vec<String>,
    pub grace_seconds: u64,
    /// The liveness probe: (port, path).
    pub liveness: Option<(u16, String)>,
}

fn str_of<'a>(v: &'a Value, what: &str) -> Result<&'a str> {
    v.as_str()
        .with_context(|| format!("DaemonSet: {what} is not a string: {v}"))
}

/// The one container of the DaemonSet's pod template, as podman arguments.
pub fn from_daemonset(ds: &Value, host: &Host) -> Result<PodmanSpec> {
    if ds["kind"] != "DaemonSet" {
        bail!("expected a DaemonSet, got {}", ds["kind"]);
    }
    let pod = &ds["spec"]["template"]["spec"];
    let containers = pod["containers"]
        .as_array()
        .context("DaemonSet: no containers")?;
    let [c] = containers.as_slice() else {
        bail!(
            "DaemonSet: {} containers; this test runs exactly one",
            containers.len()
        );
    };
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &[&str]| args.extend(a.iter().map(|s| s.to_string()));

    if pod["hostPID"] == true {
        push(&["--pid", "host"]);
    }
    if pod["hostNetwork"] == true {
        push(&["--network", "host"]);
    }
    for unsupported in ["hostIPC", "shareProcessNamespace", "initContainers"] {
        if !pod[unsupported].is_null() && pod[unsupported] != false {
            bail!("DaemonSet: {unsupported} is set, which this translation does not know");
        }
    }
    seccomp(pod, c, host, &mut args)?;
    security_context(c, &mut args)?;
    env(c, host, &mut args)?;
    volumes(pod, c, host, &mut args)?;
    resources(c, &mut args)?;
    if c["command"].is_array() || c["args"].is_array() {
        bail!("DaemonSet: command/args are set; this translation runs the image's entrypoint");
    }
    let grace_seconds = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    args.extend(["--stop-timeout".into(), grace_seconds.to_string()]);
    Ok(PodmanSpec {
        image: str_of(&c["image"], "image")?.to_string(),
        args,
        grace_seconds,
        liveness: liveness(c)?,
    })
}

/// The container's profile wins over the pod's, as in Kubernetes.
fn seccomp(pod: &Value, c: &Value, host: &Host, args: &mut Vec<String>) -> Result<()> {
    let profile = [
        &c["securityContext"]["seccompProfile"],
        &pod["securityContext"]["seccompProfile"],
    ]
    .into_iter()
    .find(|p| p.is_object());
    // No profile set: the kubelet's default is Unconfined (unless SeccompDefault is on).
    let Some(profile) = profile else {
        args.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
        return Ok(());
    };
    let opt = match str_of(&profile["type"], "seccompProfile.type")? {
        "Unconfined" => "seccomp=unconfined".to_string(),
        "RuntimeDefault" => match &host.runtime_default_seccomp {
            SeccompDefault::Podman => return Ok(()),
            SeccompDefault::File(path) => format!("seccomp={}", path.display()),
        },
        "Localhost" => {
            let rel = str_of(
                &profile["localhostProfile"],
                "seccompProfile.localhostProfile",
            )?;
            // The kubelet's seccomp root.
            format!("seccomp=/var/lib/kubelet/seccomp/{rel}")
        }
        other => bail!("DaemonSet: unknown seccompProfile.type {other}"),
    };
    args.extend(["--security-opt".into(), opt]);
    Ok(())
}

fn security_context(c: &Value, args: &mut Vec<String>) -> Result<()> {
    let sc = &c["securityContext"];
    if let Some(uid) = sc["runAsUser"].as_u64() {
        args.extend(["--user".into(), uid.to_string()]);
    }
    if sc["privileged"] == true {
        args.push("--privileged".into());
    }
    if sc["allowPrivilegeEscalation"] == false {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    if sc["readOnlyRootFilesystem"] == true {
        // podman adds writable tmpfs on /tmp, /var/tmp and /run by default; a pod gets none.
        args.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    let caps = &sc["capabilities"];
    for (key, flag) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
        for cap in caps[key].as_array().into_iter().flatten() {
            args.extend([flag.into(), str_of(cap, "capability")?.to_string()]);
        }
    }
    Ok(())
}

fn env(c: &Value, host: &Host, args: &mut Vec<String>) -> Result<()> {
    for var in c["env"].as_array().into_iter().flatten() {
        let name = str_of(&var["name"], "env name")?;
        let value = if let Some(v) = var["value"].as_str() {
            v.to_string()
        } else {
            match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => host.node_name.clone(),
                _ => bail!("DaemonSet: env {name} has a source this translation does not know"),
            }
        };
        args.extend(["--env".into(), format!("{name}={value}")]);
    }
    if c["envFrom"].is_array() {
        bail!("DaemonSet: envFrom is not supported here");
    }
    Ok(())
}

fn volumes(pod: &Value, c: &Value, host: &Host, args: &mut Vec<String>) -> Result<()> {
    let defined = pod["volumes"].as_array().cloned().unwrap_or_default();
    for mount in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = str_of(&mount["name"], "volumeMount name")?;
        let target = str_of(&mount["mountPath"], "mountPath")?;
        let ro = mount["readOnly"] == true;
        let vol = defined
            .iter()
            .find(|v| v["name"] == name)
            .with_context(|| format!("DaemonSet: volumeMount {name} has no volume"))?;
        let source = if vol["emptyDir"].is_object() {
            // The kubelet makes emptyDirs world-writable; sizeLimit is enforced by eviction,
            // not by the mount, so there is nothing to pass for it.
            let dir = host.scratch.join(name);
            std::fs::create_dir_all(&dir)?;
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
            dir
        } else if vol["hostPath"].is_object() {
            let path = PathBuf::from(str_of(&vol["hostPath"]["path"], "hostPath.path")?);
            check_host_path(&path, vol["hostPath"]["type"].as_str().unwrap_or(""))?;
            path
        } else {
            bail!("DaemonSet: volume {name} is of a kind this translation does not know");
        };
        let opts = if ro { "ro" } else { "rw" };
        args.extend([
            "--volume".into(),
            format!("{}:{target}:{opts}", source.display()),
        ]);
    }
    Ok(())
}

/// What the kubelet checks before it starts the pod.
fn check_host_path(path: &Path, kind: &str) -> Result<()> {
    let ok = match kind {
        "" | "DirectoryOrCreate" | "FileOrCreate" => true,
        "Directory" => path.is_dir(),
        "File" => path.is_file(),
        other => bail!("DaemonSet: hostPath type {other} is not supported here"),
    };
    if !ok {
        bail!(
            "hostPath {} ({kind}) does not exist on this machine: the pod would not start",
            path.display()
        );
    }
    if kind == "DirectoryOrCreate" {
        std::fs::create_dir_all(path)?;
    }
    Ok(())
}

fn resources(c: &Value, args: &mut Vec<String>) -> Result<()> {
    let limits = &c["resources"]["limits"];
    if let Some(mem) = limits["memory"].as_str() {
        args.extend(["--memory".into(), memory_bytes(mem)?.to_string()]);
    }
    if let Some(cpu) = limits["cpu"].as_str() {
        let cpus = match cpu.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>()? / 1000.0,
            None => cpu.parse::<f64>()?,
        };
        args.extend(["--cpus".into(), cpus.to_string()]);
    }
    Ok(())
}

/// A Kubernetes quantity (`512Mi`, `1Gi`, `128M`, bytes) in bytes.
fn memory_bytes(q: &str) -> Result<u64> {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mul) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>().context(format!("memory quantity {q}"))? * mul);
        }
    }
    q.parse().with_context(|| format!("memory quantity {q}"))
}

fn liveness(c: &Value) -> Result<Option<(u16, String)>> {
    let get = &c["livenessProbe"]["httpGet"];
    if !get.is_object() {
        return Ok(None);
    }
    let path = get["path"].as_str().unwrap_or("/").to_string();
    let port = match &get["port"] {
        Value::Number(n) => n.as_u64().context("probe port")?,
        Value::String(name) => c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64())
            .with_context(|| format!("DaemonSet: probe port {name} is not a container port"))?,
        other => bail!("DaemonSet: probe port {other}"),
    };
    Ok(Some((u16::try_from(port)?, path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host(scratch: &Path) -> Host {
        Host {
            node_name: "node-1".into(),
            scratch: scratch.to_path_buf(),
            runtime_default_seccomp: SeccompDefault::File("/x/containerd.json".into()),
        }
    }

    fn daemonset() -> Value {
        json!({"kind": "DaemonSet", "spec": {"template": {"spec": {
            "hostPID": true,
            "terminationGracePeriodSeconds": 30,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        {"name": "btf", "hostPath": {"path": "/", "type": "Directory"}}],
            "containers": [{
                "name": "agent", "image": "r/a:1",
                "env": [{"name": "A", "value": "1"},
                        {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "ports": [{"name": "metrics", "containerPort": 9464}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}},
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}},
                "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "btf", "mountPath": "/sys/kernel/btf", "readOnly": true}]
            }]
        }}}})
    }

    #[test]
    fn every_field_of_the_pod_becomes_a_podman_argument() {
        let dir = tempdir();
        let spec = from_daemonset(&daemonset(), &host(&dir)).unwrap();
        let a = spec.args.join(" ");
        for needed in [
            "--pid host",
            "--security-opt seccomp=/x/containerd.json",
            "--user 0",
            "--security-opt no-new-privileges",
            "--read-only --read-only-tmpfs=false",
            "--cap-drop ALL --cap-add BPF --cap-add PERFMON",
            "--env A=1 --env N=node-1",
            "--memory 536870912 --cpus 0.5",
            "--stop-timeout 30",
            ":/sys/kernel/btf:ro",
        ] {
            assert!(a.contains(needed), "{needed:?} missing in {a}");
        }
        assert!(a.contains(&format!("{}:/tmp:rw", dir.join("tmp").display())));
        assert_eq!(spec.image, "r/a:1");
        assert_eq!(spec.liveness, Some((9464, "/healthz".into())));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_the_translation_does_not_know_is_an_error() {
        let dir = tempdir();
        let mut ds = daemonset();
        ds["spec"]["template"]["spec"]["volumes"][0] = json!({"name": "tmp", "secret": {}});
        let err = from_daemonset(&ds, &host(&dir)).unwrap_err().to_string();
        assert!(err.contains("volume tmp"), "{err}");
        let mut ds = daemonset();
        ds["spec"]["template"]["spec"]["containers"][0]["env"][0] =
            json!({"name": "P", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}});
        assert!(from_daemonset(&ds, &host(&dir)).is_err());
        let mut ds = daemonset();
        ds["spec"]["template"]["spec"]["volumes"][1]["hostPath"]["path"] = json!("/nonexistent/x");
        let err = from_daemonset(&ds, &host(&dir)).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn runtime_default_on_podman_is_podmans_own_profile() {
        let dir = tempdir();
        let mut h = host(&dir);
        h.runtime_default_seccomp = SeccompDefault::Podman;
        let spec = from_daemonset(&daemonset(), &h).unwrap();
        assert!(!spec.args.iter().any(|a| a.starts_with("seccomp=")));
        let mut ds = daemonset();
        ds["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] =
            json!({"type": "Unconfined"});
        let spec = from_daemonset(&ds, &h).unwrap();
        assert!(spec.args.iter().any(|a| a == "seccomp=unconfined"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(memory_bytes("512Mi").unwrap(), 512 << 20);
        assert_eq!(memory_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(memory_bytes("4096").unwrap(), 4096);
        assert!(memory_bytes("lots").is_err());
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kalypso-podspec-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
