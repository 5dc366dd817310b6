# syntax=docker/dockerfile:1
# Trireme injector: sidecar injection webhook (ports 15017, 15014).
# Build from the workspace root (BuildKit reads injector.Dockerfile.dockerignore):
#   docker build -f deploy/docker/injector.Dockerfile -t trireme/injector:0.1.0 .
# deploy/kubernetes references it as trireme/injector (kustomize `images:`).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate; nothing else to install.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p injector --bin injector \
    && install -D -m 0755 target/release/injector /out/injector

# distroless/cc: glibc and CA certificates, no shell; runs as uid 65532,
# the runAsUser of the manifests.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/injector /usr/local/bin/injector
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/injector"]
