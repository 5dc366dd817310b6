#!/usr/bin/env bash
# Local launcher behind `make demo`: starts nats-server (JetStream) and the
# control-plane services on this machine, shows that each is up and ready,
# checks the demo config, and stops everything on Ctrl-C.
#
# Ports (override by environment): NATS 14222, pilot xDS 15010 and 15014, citadel 15114,
# galley 15214, injector 15314 (each service's /metrics and /healthz/*).
# The sidecar mesh (deploy/local/config/bookstore-mesh.yaml) runs on
# 127.0.0.30-32, ports 19080-19082, and its agents on 15400-15429.
# pilot's mutual-TLS xDS port is off (citadel has 15012 here; the demo's
# gateway speaks plain text to pilot).
# TRIREME_DEMO_ONESHOT=1 stops after showing the status instead of waiting.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/target/debug"
nats_bin="${NATS_SERVER_BIN:-$root/.tools/bin/nats-server}"
envoy_bin="${ENVOY_BIN:-$root/.tools/bin/envoy}"
cd "$root"
config_dir="${TRIREME_DEMO_CONFIG:-deploy/local/config}"
run_dir="$(mktemp -d -t trireme-demo.XXXXXX)"

nats_port="${TRIREME_DEMO_NATS_PORT:-14222}"
xds_port="${TRIREME_DEMO_XDS_PORT:-15010}"
ca_port="${TRIREME_DEMO_CA_PORT:-15012}"
# The gateway and backend ports are also written in deploy/local/config/.
gateway_port=18080
gateway_admin_port="${TRIREME_DEMO_GATEWAY_ADMIN_PORT:-19000}"
backend_ports=(18081 18082)
# The bookstore sidecar mesh: one loopback address per workload (as pods
# have their own IPs), its ports also written in bookstore-mesh.yaml.
mesh_ports=(19080 19081 19082)
jwt_issuer="https://trireme.demo.local"
declare -A http_port=(
  [pilot]="${TRIREME_DEMO_PILOT_PORT:-15014}"
  [citadel]="${TRIREME_DEMO_CITADEL_PORT:-15114}"
  [galley]="${TRIREME_DEMO_GALLEY_PORT:-15214}"
  [injector]="${TRIREME_DEMO_INJECTOR_PORT:-15314}"
)
services=(pilot citadel galley injector)
pids=()
nats_pid=""

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
say() { printf '  %s\n' "$*"; }

stop_all() {
  trap - INT TERM EXIT
  if ((${#pids[@]})) || [[ -n "$nats_pid" ]]; then
    echo
    bold "Stopping (SIGTERM): services first, then the bus"
    if ((${#pids[@]})); then
      kill -TERM "${pids[@]}" 2>/dev/null || true
      wait "${pids[@]}" 2>/dev/null || true
    fi
    if [[ -n "$nats_pid" ]]; then
      kill -TERM "$nats_pid" 2>/dev/null || true
      wait "$nats_pid" 2>/dev/null || true
    fi
    say "all stopped; logs kept in $run_dir"
  fi
}
# Ctrl-C is how the demo is meant to end: stop cleanly and report success.
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$nats_port" "$xds_port" "$ca_port" "${http_port[@]}" "$gateway_port" "$gateway_admin_port" "${backend_ports[@]}" $(seq 15400 15429); do
  if port_busy "$port"; then
    echo "error: port $port is already in use; stop what uses it or set TRIREME_DEMO_*_PORT" >&2
    exit 1
  fi
done

bold "Trireme local demo"
say "binaries: $bin"
say "logs:     $run_dir"
echo

bold "Starting nats-server with JetStream on 127.0.0.1:$nats_port"
"$nats_bin" -js -a 127.0.0.1 -p "$nats_port" -sd "$run_dir/jetstream" >"$run_dir/nats.log" 2>&1 &
nats_pid=$!
deadline=$((SECONDS + 10))
until port_busy "$nats_port"; do
  if ((SECONDS > deadline)); then
    echo "error: nats-server did not start; its log follows" >&2
    cat "$run_dir/nats.log" >&2
    exit 1
  fi
  sleep 0.1
done

# A development JWT issuer: citadel trusts its key set, and each workload
# gets a service-account token minted with its key (Kubernetes' role).
"$bin/trireme" token keygen --key-out "$run_dir/jwt-signing-key.pem" \
  --jwks-out "$run_dir/jwks.json" >/dev/null

for svc in "${services[@]}"; do
  TRIREME_JWT_ISSUER="$jwt_issuer" \
  TRIREME_JWKS="$run_dir/jwks.json" \
  TRIREME_HTTP_ADDR="127.0.0.1:${http_port[$svc]}" \
  TRIREME_NATS_URL="nats://127.0.0.1:$nats_port" \
  TRIREME_XDS_ADDR="127.0.0.1:$xds_port" \
  TRIREME_XDS_TLS_ADDR=none \
  TRIREME_WEBHOOK_ADDR=none \
  TRIREME_CONFIG_DIR="$config_dir" \
  TRIREME_GRPC_ADDR="127.0.0.1:$ca_port" \
  TRIREME_CA_DIR="$run_dir/citadel" \
    "$bin/$svc" >"$run_dir/$svc.log" 2>&1 &
  pids+=($!)
done

# Wait (at most 30 s) for every service to report ready.
deadline=$((SECONDS + 30))
for svc in "${services[@]}"; do
  until curl -fsS "http://127.0.0.1:${http_port[$svc]}/healthz/ready" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "error: $svc did not become ready; its log follows" >&2
      tail -20 "$run_dir/$svc.log" >&2
      exit 1
    fi
    sleep 0.2
  done
done

echo
bold "Control plane"
printf '  %-9s %-8s %-7s %s\n' SERVICE VERSION READY "METRICS / HEALTH"
for svc in "${services[@]}"; do
  base="http://127.0.0.1:${http_port[$svc]}"
  version="$(curl -fsS "$base/version" | awk '{print $2}')"
  ready="$(curl -s -o /dev/null -w '%{http_code}' "$base/healthz/ready")"
  [[ "$ready" == 200 ]] && ready=yes || ready="no ($ready)"
  printf '  %-9s %-8s %-7s %s\n' "$svc" "$version" "$ready" "$base/metrics  $base/healthz/ready"
done
echo
bold "Readiness of pilot, as Kubernetes would see it"
curl -fsS "http://127.0.0.1:${http_port[pilot]}/healthz/ready" | sed 's/^/  /'
echo
bold "Demo configuration ($config_dir), checked strictly"
"$bin/trireme" validate -f "$config_dir" | sed 's/^/  /'
echo
bold "Starting the catalog backends (v1 on :${backend_ports[0]}, v2 on :${backend_ports[1]}) and an Envoy ingress gateway"
python3 "$root/deploy/local/demo-backend.py" "catalog v1" "${backend_ports[0]}" >"$run_dir/catalog-v1.log" 2>&1 &
pids+=($!)
python3 "$root/deploy/local/demo-backend.py" "catalog v2" "${backend_ports[1]}" >"$run_dir/catalog-v2.log" 2>&1 &
pids+=($!)
sed -e "s/@XDS_PORT@/$xds_port/" -e "s/@ADMIN_PORT@/$gateway_admin_port/" \
  "$root/deploy/local/gateway-bootstrap.yaml" >"$run_dir/gateway-bootstrap.yaml"
"$envoy_bin" -c "$run_dir/gateway-bootstrap.yaml" --concurrency 1 --disable-hot-restart \
  -l warning >"$run_dir/gateway-envoy.log" 2>&1 &
pids+=($!)

shop() { curl -s -H "host: shop.example.com" "$@" "http://127.0.0.1:$gateway_port/products"; }
deadline=$((SECONDS + 30))
until [[ "$(shop 2>/dev/null)" == catalog* ]]; do
  if ((SECONDS > deadline)); then
    echo "error: the gateway did not start routing; logs follow" >&2
    tail -20 "$run_dir/gateway-envoy.log" "$run_dir/pilot.log" >&2
    exit 1
  fi
  sleep 0.2
done

count() { sort | uniq -c | awk '{printf "%s %s: %s   ", $2, $3, $1}'; }
echo
bold "Traffic through the gateway (stock Envoy on :$gateway_port, configured by pilot over delta xDS)"
say "100 requests for shop.example.com    -> $(for _ in $(seq 100); do shop; done | count)(VirtualService: 90/10)"
say "20 requests with x-user-group:testers -> $(for _ in $(seq 20); do shop -H 'x-user-group: testers'; done | count)(header match: v2 only)"
echo
bold "The gateway as pilot sees it (/debug/syncz)"
curl -fsS "http://127.0.0.1:${http_port[pilot]}/debug/syncz" | python3 "$root/deploy/local/show-syncz.py"
echo
bold "A sidecar mesh without root (interception mode NONE): productpage -> reviews v1/v2"
python3 "$root/deploy/local/demo-backend.py" "reviews v1" "${mesh_ports[2]}" 127.0.0.31 >"$run_dir/reviews-v1.log" 2>&1 &
pids+=($!)
python3 "$root/deploy/local/demo-backend.py" "reviews v2" "${mesh_ports[2]}" 127.0.0.32 >"$run_dir/reviews-v2.log" 2>&1 &
pids+=($!)
# start_sidecar <pod> <ip> <service account> <labels> <first of 4 ports>
start_sidecar() {
  local pod=$1 ip=$2 sa=$3 labels=$4 port=$5 pod_root="$run_dir/$1"
  mkdir -p "$pod_root/var/run/secrets/tokens" "$pod_root/var/run/secrets/istio"
  "$bin/trireme" token mint --key "$run_dir/jwt-signing-key.pem" --issuer "$jwt_issuer" \
    -n bookstore --service-account "$sa" --ttl 24h >"$pod_root/var/run/secrets/tokens/istio-token"
  cp "$run_dir/citadel/root-cert.pem" "$pod_root/var/run/secrets/istio/root-cert.pem"
  "$bin/agent" proxy sidecar --root-dir "$pod_root" --envoy-bin "$envoy_bin" \
    --interception-mode NONE --control-plane-auth-policy NONE \
    --discovery-address "127.0.0.1:$xds_port" --ca-address "localhost:$ca_port" \
    --pod-name "$pod" --pod-namespace bookstore --instance-ip "$ip" \
    --service-account "$sa" --labels "$labels" --concurrency 1 \
    --status-port "$port" --admin-port $((port + 1)) --stats-port $((port + 2)) \
    --readiness-port $((port + 3)) --termination-drain-duration 1s \
    >"$run_dir/$pod-agent.log" 2>&1 &
  pids+=($!)
}
start_sidecar reviews-v1 127.0.0.31 reviews app=reviews,version=v1 15400
start_sidecar reviews-v2 127.0.0.32 reviews app=reviews,version=v2 15410
start_sidecar productpage-1 127.0.0.30 productpage app=productpage,version=v1 15420
for port in 15403 15413 15423; do
  deadline=$((SECONDS + 60))
  until curl -fsS "http://127.0.0.1:$port/healthz/ready" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "error: a sidecar did not become ready; agent logs follow" >&2
      tail -5 "$run_dir"/*-agent.log >&2
      exit 1
    fi
    sleep 0.2
  done
done
reviews() { curl -s -H "host: reviews.bookstore.svc.cluster.local" "http://127.0.0.30:${mesh_ports[0]}/"; }
say "three agents ready: each got a certificate from citadel (JWT-authenticated) and serves it to its Envoy over SDS"
say "100 plain-HTTP requests from productpage's app -> $(for _ in $(seq 100); do reviews | cut -d' ' -f1-2; done | count)(VirtualService: 90/10)"
say "what reviews sees of its caller: $(reviews | sed 's/^[^(]*(//; s/)$//')"
plain="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.31:${mesh_ports[1]}/" || true)"
[[ "$plain" == 000 ]] && plain="refused (connection closed)" || plain="answered $plain"
say "mutual TLS between the sidecars; a plain-text call straight to reviews' sidecar: $plain"
say "  (PeerAuthentication STRICT in namespace bookstore)"
echo
bold "Try it"
say "curl -H 'host: shop.example.com' http://127.0.0.1:$gateway_port/products"
say "edit $config_dir/catalog.yaml (e.g. the weights): pilot pushes the change within a second"
say "curl http://127.0.0.1:${http_port[pilot]}/debug/config_dump?proxyID=router~127.0.0.1~shop-gateway-1.demo~demo.svc.cluster.local"
say "curl -H 'host: reviews.bookstore.svc.cluster.local' http://127.0.0.30:${mesh_ports[0]}/   (productpage's sidecar)"
say "curl http://127.0.0.1:15421/certs   (productpage's Envoy: its SPIFFE certificate, from SDS)"
say "curl http://127.0.0.1:${http_port[pilot]}/debug/syncz   (every proxy, what it was sent and ACKed)"
echo
bold "Not here yet"
say "traffic capture with iptables (agent init) runs in the root-only integration tests, not here;"
say "galley validating and publishing to the bus, the injector, Kubernetes: the next issues."
echo

if [[ "${TRIREME_DEMO_ONESHOT:-}" == 1 || "${CI:-}" == true ]]; then
  exit 0
fi
bold "Running. Try: curl http://127.0.0.1:${http_port[pilot]}/metrics   Press Ctrl-C to stop."
wait "${pids[@]}" "$nats_pid"
