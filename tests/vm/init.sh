#!/bin/sh
# /init of the `cargo xtask vm-test` initramfs (see docs/arm64.md). It only collects: it runs the
# agent on known workloads and prints everything to the console as `KALYPSO|…` lines. The host
# (xtask/src/vm.rs) parses them and decides pass or fail, so a missing line is a failure there.
# Every step is bounded by `timeout`; the script always ends with END and `poweroff -f`.
#
#   KALYPSO|BEGIN|<kernel release>|<machine>|<cpus>|<uptime>
#   KALYPSO|START|<step>|<uptime>           KALYPSO|RC|<step>|<exit status>|<uptime>
#   KALYPSO|F|<file>|<one line of it>       KALYPSO|EOF|<file>       KALYPSO|MISSING|<file>
#   KALYPSO|NOTE|<text>                     KALYPSO|END|<uptime>
export PATH=/opt/kalypso:/bin
export LD_LIBRARY_PATH=/lib/aarch64-linux-gnu:/lib/x86_64-linux-gnu
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mkdir -p /tmp
chmod 1777 /tmp

say() { (IFS='|'; echo "KALYPSO|$*"); }
up() { cut -d' ' -f1 /proc/uptime; }

# emit NAME FILE: every line of FILE, prefixed (awk ends the last line even without a newline).
emit() {
    if [ -f "$2" ]; then
        awk -v p="KALYPSO|F|$1|" '{ print p $0 }' "$2"
        say EOF "$1"
    else
        say MISSING "$1"
    fi
}

# start NAME SECONDS: starts workload NAME, waits for its "ready", sets WPID.
start() {
    "/opt/kalypso/$1" "$2" > "/tmp/$1.log" 2>&1 &
    WPID=$!
    i=0
    while ! grep -q ready "/tmp/$1.log" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 200 ]; then
            say NOTE "workload $1 did not print ready within 20 s"
            return 1
        fi
        sleep 0.1
    done
    say NOTE "workload $1 is pid $WPID"
}

stop() {
    kill "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

# step NAME CMD...: runs CMD (at most 90 s), then reports its status and stderr.
step() {
    name=$1
    shift
    say START "$name" "$(up)"
    timeout 90 "$@" > "/tmp/$name.out" 2> "/tmp/$name.err"
    rc=$?
    say RC "$name" "$rc" "$(up)"
    emit "$name.err" "/tmp/$name.err"
}

say BEGIN "$(uname -r)" "$(uname -m)" "$(grep -c ^processor /proc/cpuinfo)" "$(up)"

step version profiler-agent --version
emit version.out /tmp/version.out

if start calltree 60; then
    step calltree profiler-agent --pid "$WPID" --duration 5s --output /tmp/c.folded --quiet
    emit calltree.folded /tmp/c.folded
    # No capabilities: one `error:` line and a non-zero exit, never a panic.
    step unprivileged dropuid 65534 65534 \
        profiler-agent --pid "$WPID" --duration 2s --output /tmp/u.folded --quiet
    CALLTREE=$WPID
    # Node-wide with two busy processes, one per CPU: each stack must start with its process's
    # name (the agent only prefixes names when the profile holds more than one process).
    if start syscalls 60; then
        step node profiler-agent --duration 3s --output /tmp/all.folded --quiet
        emit node.folded /tmp/all.folded
        stop "$WPID"
    fi
    stop "$CALLTREE"
fi

if start syscalls 60; then
    step syscalls profiler-agent --pid "$WPID" --duration 5s --output /tmp/s.folded --quiet
    emit syscalls.folded /tmp/s.folded
    stop "$WPID"
fi

# Built -O2 without frame pointers: the table unwinder must reach main, frame pointers must not.
if start nofp 60; then
    step nofp profiler-agent --pid "$WPID" --duration 5s --unwind dwarf --output /tmp/n.folded --quiet
    emit nofp.folded /tmp/n.folded
    step nofp_fp profiler-agent --pid "$WPID" --duration 3s --unwind fp --output /tmp/nf.folded --quiet
    emit nofp_fp.folded /tmp/nf.folded
    stop "$WPID"
fi

# Stripped, static Go: names from .gopclntab alone, and the caller of the frameless leaf
# main.leafWork kept.
if [ -x /opt/kalypso/hot_s ] && start hot_s 60; then
    step go profiler-agent --pid "$WPID" --duration 5s --output /tmp/g.folded --quiet
    emit go.folded /tmp/g.folded
    stop "$WPID"
fi

say END "$(up)"
poweroff -f
