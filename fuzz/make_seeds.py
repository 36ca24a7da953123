#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/ (small, deterministic; run it again after changing a
format or the CFI cases). ELF seeds are the table builder's own test cases,
profiler-agent/tests/cfi/*.s, assembled and linked with binutils (aarch64 ones only where
aarch64-linux-gnu-as is installed). The targets that take structured input (page_layout,
chunk_allocator, unwind_step, replay_unwind) need no seeds."""
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
CFI = FUZZ.parent / "profiler-agent" / "tests" / "cfi"
CORPUS = FUZZ / "corpus"

# Small files: no page-aligned segments, no symbols.
LD_SMALL = ["-z", "max-page-size=0x10", "-z", "noseparate-code", "-e", "0"]


def link(name, prefix="", hdr=True, arch="x86_64"):
    """Assembles and links tests/cfi/<name>.s; None when binutils for `arch` are missing."""
    tools = {
        "x86_64": (["as", "--64"], ["ld", "-m", "elf_x86_64"]),
        "i386": (["as", "--32"], ["ld", "-m", "elf_i386"]),
        "aarch64": (["aarch64-linux-gnu-as"], ["aarch64-linux-gnu-ld"]),
    }[arch]
    if not all(shutil.which(t[0]) for t in tools):
        print(f"skipped {name} ({arch}): {tools[0][0]} or {tools[1][0]} not installed")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "prefix.s").write_text(prefix + "\n")
        subprocess.run(
            tools[0] + ["-o", tmp / "o.o", tmp / "prefix.s", CFI / f"{name}.s"], check=True
        )
        # Stripping symbols would strip .debug_frame too.
        strip = [] if ".debug_frame" in prefix else ["-s"]
        args = tools[1] + (["--eh-frame-hdr"] if hdr else []) + LD_SMALL + strip
        subprocess.run(args + ["-o", tmp / "out", tmp / "o.o"], check=True)
        return (tmp / "out").read_bytes()


def write(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (directory / name).write_bytes(data)


def elves():
    out = {}
    for name in ["push_pop", "sub_rsp", "remember_state", "signal_frame", "outermost"]:
        out[name] = link(name)
    # GNU ld refuses an .eh_frame_hdr over overlapping FDEs.
    out["overlap"] = link("overlap", hdr=False)
    out["push_pop-no-hdr"] = link("push_pop", hdr=False)
    out["remember_state-debug-frame"] = link("remember_state", prefix=".cfi_sections .debug_frame")
    out["i386"] = link("i386", arch="i386")
    out["aarch64"] = link("aarch64", arch="aarch64")
    return {k: v for k, v in out.items() if v is not None}


def cache_file(arch, rows):
    """A table file as unwind::cache writes it (little-endian host): header, then the rows."""
    header = b"KLPSROWS" + struct.pack("<4I", 1, 0x01020304, arch, 12)
    counters = [len(rows), 0, len(rows), 0, 0, 0, 0, 0, 64, 0]  # count, then TableInfo
    counters[3] = sum(1 for r in rows if r[1] == 5)
    header += struct.pack("<10Q", *counters)
    header += bytes(128 - len(header))
    body = b"".join(struct.pack("<IBBhhh", pc, kind, 0, cfa, fp, ra) for pc, kind, cfa, fp, ra in rows)
    return header + body


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def pcvalue(runs):
    """A Go pc-value table (quantum 1): zig-zag value deltas from -1, pc deltas, 0-terminated."""
    out, pc, value = bytearray(), 0, -1
    for end, v in runs:
        delta = v - value
        out += varint(((delta << 1) ^ (delta >> 31)) & 0xFFFFFFFF)
        out += varint(end - pc)
        pc, value = end, v
    return bytes(out + b"\0")


def go_table(magic):
    """A Go function table with goexit, a frameless leaf and a function with a frame, in the
    layout of `magic` (0xfffffff1: Go 1.20+, 0xfffffff0: 1.18, 0xfffffffa: 1.16); the same
    functions as profiler-agent/src/gopclntab/tests.rs."""
    funcs = [  # name, entry, size, sp runs, line runs, flag
        ("runtime.goexit", 0, 0x10, [(0x10, 0)], [(0x10, 1595)], 1),
        ("main.leafWork", 0x10, 0x40, [(0x40, 0)], [(0x8, 8), (0x40, 9)], 0),
        ("main.hotA", 0x50, 0x30, [(0x0A, 0), (0x27, 16), (0x30, 0)], [(0x30, 15)], 0),
    ]
    text = 0x401000
    old = magic == 0xFFFFFFFA
    names, name_offs = bytearray(), []
    for f in funcs:
        name_offs.append(len(names))
        names += f[0].encode() + b"\0"
    cutab, filetab, pctab, tables = struct.pack("<I", 0), b"main.go\0", bytearray(b"\0"), []
    for f in funcs:
        sp = len(pctab)
        pctab += pcvalue(f[3])
        file = len(pctab)
        pctab += pcvalue([(f[2], 0)])
        line = len(pctab)
        pctab += pcvalue(f[4])
        tables.append((sp, file, line))
    entry = 16 if old else 8
    pcln = bytearray((len(funcs) + 1) * entry)
    for i, f in enumerate(funcs):
        off = len(pcln)
        if old:
            struct.pack_into("<QQ", pcln, i * 16, text + f[1], off)
            pcln += struct.pack("<Q", text + f[1])
        else:
            struct.pack_into("<II", pcln, i * 8, f[1], off)
            pcln += struct.pack("<I", f[1])
        sp, file, line = tables[i]
        words = [name_offs[i], 0, 0, sp, file, line, 0, 0]
        if magic == 0xFFFFFFF1:
            words.append(1)  # startLine
        pcln += struct.pack(f"<{len(words)}I", *words) + bytes([0, f[5], 0, 0])
        if len(pcln) % 8:
            pcln += bytes(8 - len(pcln) % 8)
    last = funcs[-1][1] + funcs[-1][2]
    n = len(funcs)
    if old:
        struct.pack_into("<QQ", pcln, n * 16, text + last, 0)
    else:
        struct.pack_into("<II", pcln, n * 8, last, 0)
    head = 8 + (7 if old else 8) * 8  # Go 1.16's header has no textStart
    offs, at = [], head
    for part in (names, cutab, filetab, pctab):
        offs.append(at)
        at += len(part)
    offs.append(at)
    words = [n, 1] + ([] if old else [text]) + offs
    header = struct.pack("<IBBBB", magic, 0, 0, 1, 8) + struct.pack(f"<{len(words)}Q", *words)
    header += bytes(head - len(header))
    return header + bytes(names) + cutab + filetab + bytes(pctab) + bytes(pcln)


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    objects = elves()
    for name, elf in objects.items():
        write("unwind_table", name, elf)
    for name in ["push_pop", "outermost", "aarch64"]:
        elf = objects.get(name)
        if elf:
            # mapping start, file offset (little-endian u64s), then the ELF file
            write("load_bias", name, struct.pack("<QQ", 0x5555_5555_4000, 0) + elf)
            write("load_bias", name + "-offset", struct.pack("<QQ", 0x7F00_0000_1000, 0x1000) + elf)

    # CFA_SP 0, CFA_FP 1, END 2, PLT 3, NO_INFO 4, UNSUPPORTED 5
    push_pop = [(0x1000, 0, 8, 0, -8), (0x1001, 0, 16, -16, -8), (0x1004, 1, 16, -16, -8),
                (0x1006, 0, 8, 0, -8), (0x1010, 4, 0, 0, 0)]
    write("table_cache", "x86_64", cache_file(0, push_pop))
    across_pages = [(0xFFF0, 0, 16, 0, -8), (0x3_0004, 2, 0, 0, 0), (0x3_0010, 5, 0, 0, 0),
                    (0x5_0000, 4, 0, 0, 0)]
    write("table_cache", "aarch64-pages", cache_file(1, across_pages))
    write("table_cache", "empty", cache_file(0, []))
    write("gopclntab", "go1.20", go_table(0xFFFFFFF1))
    write("gopclntab", "go1.18", go_table(0xFFFFFFF0))
    write("gopclntab", "go1.16", go_table(0xFFFFFFFA))

    snapshot = {
        "arch": "x86_64",
        "regs": {"pc": "0x555555555010", "sp": "0x7ffc00001000", "fp": "0x7ffc00001010",
                 "lr": "0x0"},
        "stack_base": "0x7ffc00001000",
        "stack": (bytes(16) + struct.pack("<QQ", 0x7FFC00001030, 0x555555555150)
                  + bytes(16) + struct.pack("<QQ", 0, 0x555555555280)).hex(),
    }
    write("stack_snapshot", "x86_64.json", json.dumps(snapshot, indent=2))
    snapshot.update(arch="aarch64", stack="00" * 24)
    write("stack_snapshot", "aarch64.json", json.dumps(snapshot))

    write("proc_maps", "process", """\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 100 /usr/bin/app
55d0c0001000-55d0c0004000 r-xp 00001000 08:01 100 /usr/bin/app
55d0c0004000-55d0c0005000 rw-p 00004000 08:01 100 /usr/bin/app
7f0000000000-7f0000001000 r--p 00000000 08:01 200 /usr/lib/libc.so.6
7f0000001000-7f0000004000 r-xp 00001000 08:01 200 /usr/lib/libc.so.6
7f1000000000-7f1000001000 r-xp 00000000 08:01 300 /usr/lib/libunknown.so
7f2000000000-7f2000001000 rwxp 00000000 00:00 0 
7f3000000000-7f3000001000 r-xp 00000000 08:01 400 /tmp/deleted lib.so (deleted)
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
""")

    cid = "0123456789abcdef" * 4
    write("cgroup", "v1", f"12:memory:/docker/{cid}\n11:cpu,cpuacct:/docker/{cid}\n")
    write("cgroup", "v2-systemd", f"0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{cid}.scope\n")
    write("cgroup", "containerd-cgroupfs", f"0::/system.slice/containerd.service/kubepods-pod1.slice:cri-containerd:{cid}")
    write("cgroup", "conmon", f"0::/machine.slice/libpod-conmon-{cid}.scope\n0::/\n")

    write("otel_attributes", "attributes", " service.name = a%20b%2Cc ,x=y=z,e=, k=caf%C3%A9")
    write("otel_attributes", "environ",
          "PATH=/bin\0OTEL_SERVICE_NAME=\0OTEL_RESOURCE_ATTRIBUTES=team=a,service.name=svc%21\0")

    for name, args in {
        "local": ["--pid", "1234", "--duration", "10s", "--output", "cpu.pb.gz", "-F", "999"],
        "export": ["--exporter", "otlp", "--otlp-endpoint", "https://collector:4317",
                   "--otlp-header", "X-Scope-OrgID=tenant", "--resource-attributes", "a=b,c=d%20e",
                   "--include-comm", "^(java|python)$", "--metrics-addr", "[::1]:9464"],
        "unwind": ["--unwind", "dwarf", "--unwind-cache-dir", "/tmp/x", "--unwind-cache-bytes",
                   "1048576", "--drain-interval", "250ms", "--format", "folded", "--quiet"],
    }.items():
        write("config", name, "\0".join(args))
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    print(f"wrote {sum(1 for f in CORPUS.rglob('*') if f.is_file())} seeds, {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
