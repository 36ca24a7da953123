//! Telling a seccomp refusal from a missing capability. Both make `bpf()` and `perf_event_open()`
//! fail with EPERM, but the fixes differ: a container that holds CAP_BPF and CAP_PERFMON and is
//! still refused is stopped by its runtime's seccomp profile (containers-common, which podman and
//! CRI-O apply as RuntimeDefault, allows these calls only with CAP_SYS_ADMIN; containerd >= 1.6.9
//! allows them with CAP_BPF / CAP_PERFMON).

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const NO_PERMISSION: &str = "not permitted to load the eBPF sampler: run as root, or grant CAP_BPF and CAP_PERFMON (e.g. `sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace+ep profiler-agent`)";

const SECCOMP_REFUSED: &str = "bpf()/perf_event_open() refused with EPERM although CAP_BPF and CAP_PERFMON are effective: a seccomp filter blocks them (the container runtime's profile; CRI-O's and podman's allow them only with CAP_SYS_ADMIN): set the pod's seccompProfile to Unconfined or to a Localhost profile that allows bpf and perf_event_open (containerd >= 1.6.9 RuntimeDefault already does)";

/// The one line for an EPERM from `bpf()` or `perf_event_open()`, judged by this process's own
/// `/proc/self/status`.
pub fn permission_advice() -> &'static str {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    advice_for_status(&status)
}

/// [`permission_advice`] for a given `/proc/PID/status` text.
pub fn advice_for_status(status: &str) -> &'static str {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let caps = field("CapEff:").and_then(|hex| u64::from_str_radix(hex, 16).ok());
    let has = |cap: u32| caps.is_some_and(|c| c & (1 << cap) != 0);
    let capable = (has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN);
    // `Seccomp:` 0 = off, 1 = strict, 2 = filter.
    let filtered = field("Seccomp:") == Some("2");
    if capable && filtered {
        SECCOMP_REFUSED
    } else {
        NO_PERMISSION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(cap_eff: &str, seccomp: &str) -> String {
        format!("Name:\tprofiler-agent\nCapEff:\t{cap_eff}\nNoNewPrivs:\t1\nSeccomp:\t{seccomp}\n")
    }

    // CAP_BPF | CAP_PERFMON | CAP_SYS_PTRACE | CAP_SYS_RESOURCE | CAP_SYSLOG: the DaemonSet's.
    const DAEMONSET_CAPS: &str = "000000c401080000";

    #[test]
    fn capable_and_filtered_names_seccomp_and_the_fix() {
        let line = advice_for_status(&status(DAEMONSET_CAPS, "2"));
        assert!(
            line.contains("seccomp") && line.contains("seccompProfile"),
            "{line}"
        );
        assert!(!line.contains('\n'));
        // CAP_SYS_ADMIN alone (legacy kernels) counts as capable too.
        assert_eq!(
            advice_for_status(&status("0000000000200000", "2")),
            SECCOMP_REFUSED
        );
    }

    #[test]
    fn missing_capabilities_or_no_filter_keep_the_capability_advice() {
        // No CAP_PERFMON.
        assert_eq!(
            advice_for_status(&status("0000008000000000", "2")),
            NO_PERMISSION
        );
        // Capable and unfiltered: something else refused (an LSM, say); seccomp is not to blame.
        assert_eq!(
            advice_for_status(&status(DAEMONSET_CAPS, "0")),
            NO_PERMISSION
        );
        // Unreadable status.
        assert_eq!(advice_for_status(""), NO_PERMISSION);
    }

    #[test]
    fn the_daemonset_capabilities_are_the_ones_checked() {
        let caps = u64::from_str_radix(DAEMONSET_CAPS, 16).unwrap();
        for cap in [CAP_BPF, CAP_PERFMON] {
            assert!(caps & (1 << cap) != 0);
        }
    }
}
