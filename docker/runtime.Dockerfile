# syntax=docker/dockerfile:1
#
# Image of the Parley chat runtime, `chat-runtime`. Build it from the top of
# the repository:
#
#   docker build -f docker/runtime.Dockerfile -t ghcr.io/parley-dev/chat-runtime:0.1.0 .
#
# The binary is a release build for glibc on the distroless `cc` base, not
# a static musl build on `static`, for two reasons. musl's malloc is slow
# when many threads allocate at once, as the tokio worker threads that
# serve the WebSockets do. And this is the same `cargo build` as in
# development, with no musl C toolchain for the bundled SQLite. The binary
# links only glibc, libm and libgcc_s, which `cc` contains. The builder
# runs the base's Debian release, bookworm (Debian 12), so the binary
# needs no newer glibc than the base has.
#
# The image expects what the operator's Deployment provides: a read-only
# root filesystem, the configuration file named by `--config` (the operator
# mounts it at /etc/parley/config/config.yaml), a writable data directory
# (/var/lib/parley) and a writable /tmp.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Every workspace member, because cargo loads the whole workspace.
COPY Cargo.toml Cargo.lock ./
COPY chat-runtime chat-runtime
COPY operator operator
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p chat-runtime \
    && install -D target/release/chat-runtime /out/chat-runtime

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="chat-runtime" \
      org.opencontainers.image.description="Parley multi-tenant chat runtime" \
      org.opencontainers.image.source="https://github.com/parley-dev/parley" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/chat-runtime /usr/local/bin/chat-runtime
# The numeric id of the base's `nonroot` user, so that the kubelet can
# verify `runAsNonRoot` without a runAsUser in the pod.
USER 65532:65532
# The HTTP and WebSocket listener, when `server.listen` is 0.0.0.0:8080.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chat-runtime"]
