# syntax=docker/dockerfile:1
# Trireme galley: config validation webhook and intake (ports 15017, 15014).
# Build from the workspace root (BuildKit reads galley.Dockerfile.dockerignore):
#   docker build -f deploy/docker/galley.Dockerfile -t trireme/galley:0.1.0 .
# deploy/kubernetes references it as trireme/galley (kustomize `images:`).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate; nothing else to install.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p galley --bin galley \
    && install -D -m 0755 target/release/galley /out/galley

# distroless/cc: glibc and CA certificates, no shell; runs as uid 65532,
# the runAsUser of the manifests.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/galley /usr/local/bin/galley
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/galley"]
