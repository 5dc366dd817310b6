# syntax=docker/dockerfile:1
# Trireme citadel: the certificate authority (ports 15012, 15014).
# Build from the workspace root (BuildKit reads citadel.Dockerfile.dockerignore):
#   docker build -f deploy/docker/citadel.Dockerfile -t trireme/citadel:0.1.0 .
# deploy/kubernetes references it as trireme/citadel (kustomize `images:`).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate; nothing else to install.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p citadel --bin citadel \
    && install -D -m 0755 target/release/citadel /out/citadel

# distroless/cc: glibc and CA certificates, no shell; runs as uid 65532,
# the runAsUser of the manifests.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/citadel /usr/local/bin/citadel
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/citadel"]
