# syntax=docker/dockerfile:1
#
# secret-inject: one image for the webhook (`secret-inject webhook`) and the agent it injects
# into pods (`/usr/local/bin/secret-inject agent`).
#
#   docker buildx build --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/secret-inject/secret-inject:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg REVISION=... -t ... --push .
#
# The binary is statically linked (.cargo/config.toml sets `-C target-feature=+crt-static` for
# both targets), so the image is FROM scratch: the binary, the CA bundle it verifies AWS
# endpoints with, and an empty /tmp. Nothing else: no shell, no package manager, no libc.
# tests/it/image.rs runs the binary in a directory holding exactly these files with `chroot`.
#
# Without Docker, `scripts/build-image secret-inject --out DIR` writes this same image as an OCI
# image layout (`scripts/push-image DIR REGISTRY/REPO:TAG` pushes it). It reads this file: the
# files from the builder stage's `mkdir -p`, `install -m MODE SOURCE /rootfs/PATH` and `chmod`
# lines, the configuration from the final stage, which may hold only ARG, LABEL, ENV, USER,
# EXPOSE, ENTRYPOINT, CMD and the one `COPY --from=builder /rootfs/ /` (it refuses anything else).
#
# Multi-arch: the builder stage runs on the *target* platform (no `--platform=$BUILDPLATFORM`),
# so every build is a native build and needs no cross toolchain. On an amd64 machine, buildx
# runs the arm64 builder under QEMU emulation (install it once with
# `docker run --privileged --rm tonistiigi/binfmt --install arm64`); that is slow, so for
# releases use a native arm64 builder node (`docker buildx create --append --platform
# linux/arm64 ...`) or build each architecture on its own runner and merge the manifests.
# Without Docker, scripts/build-release cross-compiles both architectures on one amd64 machine
# (Debian's aarch64 cross toolchain, chosen by environment variables there, so nothing in
# .cargo/config.toml changes this native build) and scripts/build-image writes the two-platform
# image index from the two binaries.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
# Set by BuildKit from --platform (amd64, arm64); empty with the legacy builder, where the
# builder's own architecture is used.
ARG TARGETARCH
# The source revision `secret-inject --version` prints (build.rs): the build context has no .git
# (.dockerignore), so pass it: --build-arg REVISION=$(git rev-parse HEAD). The final stage's
# REVISION label takes the same argument.
ARG REVISION=unknown
WORKDIR /src
COPY . .
# Build for the target's triple (overriding build.target of .cargo/config.toml), refuse a
# dynamically linked result (it could not start FROM scratch), then assemble the image's whole
# root file system in /rootfs: the binary, the CA bundle and a world-writable /tmp (1777).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,id=secret-inject-target-${TARGETARCH} \
    set -eu; \
    arch="${TARGETARCH:-$(dpkg --print-architecture)}"; \
    case "$arch" in \
        amd64) target=x86_64-unknown-linux-gnu ;; \
        arm64) target=aarch64-unknown-linux-gnu ;; \
        *) echo "unsupported TARGETARCH=$arch: use linux/amd64 or linux/arm64" >&2; exit 1 ;; \
    esac; \
    host="$(rustc -vV | sed -n 's/^host: //p')"; \
    if [ "$host" != "$target" ]; then \
        echo "this builder is $host, not $target: build $arch on a native or emulated $arch builder" >&2; \
        exit 1; \
    fi; \
    SECRET_INJECT_REVISION="$REVISION" cargo build --release --locked --target "$target"; \
    binary="target/$target/release/secret-inject"; \
    if readelf --program-headers "$binary" | grep -q 'Requesting program interpreter'; then \
        echo "$binary is dynamically linked; .cargo/config.toml must enable crt-static for $target" >&2; \
        exit 1; \
    fi; \
    mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/tmp; \
    install -m 0755 "$binary" /rootfs/usr/local/bin/secret-inject; \
    install -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt; \
    chmod 1777 /rootfs/tmp; \
    /rootfs/usr/local/bin/secret-inject --version

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="secret-inject" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook that injects AWS Secrets Manager secrets into pods, and the agent it injects" \
      org.opencontainers.image.source="https://github.com/secret-inject/secret-inject" \
      org.opencontainers.image.url="https://github.com/secret-inject/secret-inject" \
      org.opencontainers.image.documentation="https://github.com/secret-inject/secret-inject/blob/main/docs/install-eks.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# /usr/local/bin/secret-inject, /etc/ssl/certs/ca-certificates.crt, /tmp (1777).
COPY --from=builder /rootfs/ /
# rustls-native-certs (and OpenSSL-style probing) look here first; the bundle is the only one.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# The conventional "nonroot" user of distroless images; also the uid the webhook gives the
# injected agent when the app's user is unknown. Numeric, as there is no /etc/passwd.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/secret-inject"]
CMD ["webhook"]
