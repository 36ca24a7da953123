# syntax=docker/dockerfile:1.7
#
# The Kalypso profiler agent, one multi-arch image (linux/amd64 + linux/arm64):
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/profiler-agent:<version> .
#
# The builder always runs on the build machine's own architecture ($BUILDPLATFORM) and
# cross-compiles for $TARGETARCH with the project's own commands (cargo xtask), the same ones CI
# runs: no per-architecture edits, and no emulated compiler. Only the final `--version` smoke step
# runs on the target architecture (under QEMU when it differs from the build machine).

# The base images are build arguments, official images by default: a site with its own mirror,
# or a machine that makes its base images itself (the image command's `--base local`, see
# docs/image.md), passes others.
# The builder must be a Debian bookworm with rustup's cargo (what `rust:1-bookworm` is) and the
# runtime the same Debian release (glibc), see below.
ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
# checkov reads `FROM ${BUILDER_IMAGE}` as an untagged image; both defaults above carry a tag.
#checkov:skip=CKV_DOCKER_7:the base images are build arguments whose defaults are tagged (rust:1-bookworm, debian:bookworm-slim)

FROM --platform=$BUILDPLATFORM ${BUILDER_IMAGE} AS builder
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src

# One place maps Docker's architecture names to Rust target triples; anything else stops here.
RUN case "${TARGETARCH}" in \
      amd64) echo x86_64-unknown-linux-gnu ;; \
      arm64) echo aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac > /rust-target

# Toolchain: Debian's rustc-web/rust-web-src and LLVM, bpf-linker, and the cross linker and std
# when the target is not the build machine's own architecture (`setup` knows which). The same
# command a developer or CI runs. Only xtask and the manifests are copied for it, so that editing
# the agent does not reinstall LLVM and rebuild bpf-linker: `cargo xtask` loads the whole
# workspace, so the other members get empty sources for this step only.
COPY Cargo.toml Cargo.lock ./
COPY .cargo/ .cargo/
COPY xtask/ xtask/
COPY profiler-common/Cargo.toml profiler-common/
COPY profiler-agent/Cargo.toml profiler-agent/
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=kalypso-target-${TARGETARCH} \
    mkdir -p profiler-common/src profiler-agent/src \
 && touch profiler-common/src/lib.rs profiler-agent/src/lib.rs profiler-agent/src/main.rs \
 && cargo xtask setup --target "$(cat /rust-target)" \
 && rm -r profiler-common/src profiler-agent/src

# The cache mounts are shared, not `sharing=locked`: cargo locks its registry and target
# directories itself, and buildah 1.28 never releases a locked cache taken by an earlier step.
# The whole workspace (.dockerignore keeps out charts, docs, git and build output).
COPY . .

# The BPF object (byte-identical for both architectures while it reads no pt_regs), then the
# agent for the target, which embeds the object.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=kalypso-target-${TARGETARCH} \
    --mount=type=cache,target=/src/profiler-ebpf/target,id=kalypso-ebpf-target \
    cargo xtask build-ebpf \
 && cargo xtask build --release --target "$(cat /rust-target)" \
 && install -D -m 0755 "target/$(cat /rust-target)/release/profiler-agent" /out/profiler-agent

# glibc of the builder (bookworm) = glibc of the runtime image (bookworm): the cross-linked binary
# needs nothing else than libc and libgcc_s, both in -slim.
FROM ${RUNTIME_IMAGE}
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
