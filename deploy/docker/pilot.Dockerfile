# syntax=docker/dockerfile:1
# Trireme pilot: xDS server (ports 15010, 15012, 15014).
# Build from the workspace root (BuildKit reads pilot.Dockerfile.dockerignore):
#   docker build -f deploy/docker/pilot.Dockerfile -t trireme/pilot:0.1.0 .
# deploy/kubernetes references it as trireme/pilot (kustomize `images:`).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate; nothing else to install.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p pilot --bin pilot \
    && install -D -m 0755 target/release/pilot /out/pilot

# distroless/cc: glibc and CA certificates, no shell; runs as uid 65532,
# the runAsUser of the manifests.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/pilot /usr/local/bin/pilot
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pilot"]
