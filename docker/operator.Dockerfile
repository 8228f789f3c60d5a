# syntax=docker/dockerfile:1
#
# Image of `parley-operator`. Build it from the top of the repository:
#
#   docker build -f docker/operator.Dockerfile -t ghcr.io/parley-dev/parley-operator:0.1.0 .
#
# The binary is a release build for glibc on the distroless `cc` base, not
# a static musl build on `static`, for two reasons. musl's malloc is slow
# when many threads allocate at once, as tokio's worker threads do. And
# this is the same `cargo build` as in development, with no musl C
# toolchain for ring's C and assembly code. The binary links only glibc,
# libm and libgcc_s, which `cc` contains. The builder runs the base's
# Debian release, bookworm (Debian 12), so the binary needs no newer glibc
# than the base has.

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
    cargo build --release --locked -p parley-operator \
    && install -D target/release/parley-operator /out/parley-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="parley-operator" \
      org.opencontainers.image.description="Kubernetes operator for Parley chat tenants" \
      org.opencontainers.image.source="https://github.com/parley-dev/parley" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/parley-operator /usr/local/bin/parley-operator
# The numeric id of the base's `nonroot` user, so that the kubelet can
# verify `runAsNonRoot` without a runAsUser in the pod.
USER 65532:65532
# `/healthz`, `/readyz` and `/metrics`, when started with `run --listen 0.0.0.0:8081`.
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/parley-operator"]
