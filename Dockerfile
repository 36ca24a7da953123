# syntax=docker/dockerfile:1.7
#
# The Kalypso profiler agent, one multi-arch image (linux/amd64 + linux/arm64):
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/profiler-agent:<version> .
#
# The builder always runs on the build machine's own architecture ($BUILDPLATFORM) and
# cross-compiles for $TARGETARCH with the project's own commands (cargo xtask), the same ones CI
# runs: no per-architecture edits, and no emulated compiler. Only the final `--version` smoke step
# runs on the target architecture (under QEMU when it differs from the build machine).

ARG DEBIAN_RELEASE=bookworm

FROM --platform=$BUILDPLATFORM rust:1-${DEBIAN_RELEASE} AS builder
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# One place maps Docker's architecture names to Rust target triples; anything else stops here.
RUN case "${TARGETARCH}" in \
      amd64) echo x86_64-unknown-linux-gnu ;; \
      arm64) echo aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target

# The whole workspace (.dockerignore keeps out charts, docs, git and build output): `cargo xtask`
# builds xtask from the workspace, so every member's manifest must be there.
COPY . .

# Toolchain: Debian's rustc-web/rust-web-src and LLVM, bpf-linker, and for arm64 the multiarch std
# and the aarch64 linker. The same command a developer or CI runs.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo xtask setup --target "$(cat /rust-target)"

# The BPF object (byte-identical for both architectures while it reads no pt_regs), then the
# agent for the target, which embeds the object.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=kalypso-target-${TARGETARCH} \
    cargo xtask build-ebpf \
 && cargo xtask build --release --target "$(cat /rust-target)" \
 && install -D -m 0755 "target/$(cat /rust-target)/release/profiler-agent" /out/profiler-agent

# glibc of the builder (bookworm) = glibc of the runtime image (bookworm): the cross-linked binary
# needs nothing else than libc and libgcc_s, both in -slim.
FROM debian:${DEBIAN_RELEASE}-slim
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kalypso profiler-agent" \
      org.opencontainers.image.description="Continuous CPU profiler for Linux and Kubernetes (eBPF, OTLP profiles)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/profiler-agent /usr/local/bin/profiler-agent
# Smoke test on the target architecture: the binary loads and parses its flags.
RUN ["/usr/local/bin/profiler-agent", "--version"]
# The agent must run as root: loading BPF and opening perf events need CAP_BPF/CAP_PERFMON, which
# Kubernetes only makes effective for uid 0 (no ambient capabilities). The DaemonSet drops every
# other capability, forbids privilege escalation and mounts this filesystem read-only.
#checkov:skip=CKV_DOCKER_3:runs as root on purpose, see the comment above; the pod drops all other capabilities
# The kubelet ignores Docker HEALTHCHECK; the DaemonSet probes /healthz, and this image has no HTTP client.
#checkov:skip=CKV_DOCKER_2:Kubernetes liveness/readiness probes call /healthz instead
ENTRYPOINT ["/usr/local/bin/profiler-agent"]
