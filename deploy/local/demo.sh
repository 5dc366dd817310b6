#!/usr/bin/env bash
# Local launcher behind `make demo`: starts nats-server (JetStream) and the
# control-plane services on this machine, shows that each is up and ready,
# checks the demo config, and stops everything on Ctrl-C.
#
# Ports (override by environment): NATS 14222, pilot xDS 15010 and 15014, citadel 15114,
# galley 15214, injector 15314 (each service's /metrics and /healthz/*).
# The sidecar mesh: as root, in network namespaces with iptables capture
# (deploy/local/config/bookinfo-mesh.yaml, pods on the bridge trireme0,
# 10.233.0.0/24, where pilot's xDS and citadel listen); otherwise in
# interception mode NONE (bookstore-mesh.yaml) on 127.0.0.30-32, ports
# 19080-19082, its agents on 15400-15429. TRIREME_DEMO_NETNS=0 asks for the
# latter as root too.
# pilot's mutual-TLS xDS port is off (citadel has 15012 here; the demo's
# gateway speaks plain text to pilot).
# TRIREME_DEMO_ONESHOT=1 stops after showing the status instead of waiting.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=deploy/local/pod-network.sh
source "$root/deploy/local/pod-network.sh"
bin="$root/target/debug"
nats_bin="${NATS_SERVER_BIN:-$root/.tools/bin/nats-server}"
envoy_bin="${ENVOY_BIN:-$root/.tools/bin/envoy}"
cd "$root"
config_dir="${TRIREME_DEMO_CONFIG:-deploy/local/config}"
run_dir="$(mktemp -d -t trireme-demo.XXXXXX)"
# The demo edits its config to show galley at work: a copy, never the repo's.
cp -r "$config_dir" "$run_dir/config"
config_dir="$run_dir/config"

nats_port="${TRIREME_DEMO_NATS_PORT:-14222}"
xds_port="${TRIREME_DEMO_XDS_PORT:-15010}"
# A second pilot replica reading the same config from the bus.
xds_port_b="${TRIREME_DEMO_XDS_PORT_B:-15011}"
ca_port="${TRIREME_DEMO_CA_PORT:-15012}"
# The injector's mutating webhook (HTTPS, a self-signed demo certificate).
injector_webhook_port="${TRIREME_DEMO_INJECTOR_WEBHOOK_PORT:-15017}"
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
  [pilot-b]="${TRIREME_DEMO_PILOT_B_PORT:-15514}"
  [citadel]="${TRIREME_DEMO_CITADEL_PORT:-15114}"
  [galley]="${TRIREME_DEMO_GALLEY_PORT:-15214}"
  [injector]="${TRIREME_DEMO_INJECTOR_PORT:-15314}"
)
# galley first: it publishes the config directory the pilots read.
services=(galley citadel injector pilot pilot-b)
pids=()
nats_pid=""
mesh_pods=(productpage reviews-v1 reviews-v2 outsider)
if can_run_pods && [[ "${TRIREME_DEMO_NETNS:-1}" != 0 ]]; then
  pods=netns
  control_plane_ip="$node_ip"
else
  pods=loopback
  control_plane_ip=127.0.0.1
fi

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
  if [[ "$pods" == netns ]]; then
    pod_network_down "${mesh_pods[@]}"
  fi
}
# Ctrl-C is how the demo is meant to end: stop cleanly and report success.
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$nats_port" "$xds_port" "$xds_port_b" "$ca_port" "$injector_webhook_port" "${http_port[@]}" "$gateway_port" "$gateway_admin_port" "${backend_ports[@]}" $(seq 15400 15429); do
  if port_busy "$port"; then
    echo "error: port $port is already in use; stop what uses it or set TRIREME_DEMO_*_PORT" >&2
    exit 1
  fi
done

bold "Trireme local demo"
say "binaries: $bin"
say "logs:     $run_dir"
echo

if [[ "$pods" == netns ]]; then
  pod_network_up "${mesh_pods[@]}"
fi

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

nats_url="nats://127.0.0.1:$nats_port"
# The injector's webhook certificate; in a cluster a Secret mounted at
# /var/run/secrets/istio-dns.
webhook_tls="$run_dir/injector-tls"
mkdir -p "$webhook_tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/CN=injector.istio-system.svc" \
  -addext "subjectAltName=DNS:injector.istio-system.svc,IP:127.0.0.1" \
  -keyout "$webhook_tls/key.pem" -out "$webhook_tls/cert-chain.pem" >/dev/null 2>&1
# start_service <name>: one control-plane service; pilot-b is a second pilot.
start_service() {
  local svc=$1
  local -a flags=()
  case $svc in
    galley) flags=(--config-dir "$config_dir") ;;
    injector) flags=(--webhook-addr "127.0.0.1:$injector_webhook_port" \
      --webhook-cert "$webhook_tls/cert-chain.pem" --webhook-key "$webhook_tls/key.pem") ;;
    pilot) flags=(--nats-url "$nats_url" --xds-addr "$control_plane_ip:$xds_port" --pod-name pilot-a) ;;
    pilot-b) flags=(--nats-url "$nats_url" --xds-addr "$control_plane_ip:$xds_port_b" --pod-name pilot-b) ;;
  esac
  TRIREME_JWT_ISSUER="$jwt_issuer" \
  TRIREME_JWKS="$run_dir/jwks.json" \
  TRIREME_HTTP_ADDR="127.0.0.1:${http_port[$svc]}" \
  TRIREME_NATS_URL="$nats_url" \
  TRIREME_XDS_TLS_ADDR=none \
  TRIREME_WEBHOOK_ADDR=none \
  TRIREME_GRPC_ADDR="$control_plane_ip:$ca_port" \
  TRIREME_CA_DIR="$run_dir/citadel" \
    "$bin/${svc%-b}" "${flags[@]}" >"$run_dir/$svc.log" 2>&1 &
  pids+=($!)
}
for svc in "${services[@]}"; do
  start_service "$svc"
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
sed -e "s/@XDS_HOST@/$control_plane_ip/" -e "s/@XDS_PORT@/$xds_port/" -e "s/@XDS_PORT_B@/$xds_port_b/" \
  -e "s/@ADMIN_PORT@/$gateway_admin_port/" \
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
bold "Traffic through the gateway (stock Envoy on :$gateway_port, configured by pilot over delta xDS; pilot-a or pilot-b, the same config)"
say "100 requests for shop.example.com    -> $(for _ in $(seq 100); do shop; done | count)(VirtualService: 90/10)"
say "20 requests with x-user-group:testers -> $(for _ in $(seq 20); do shop -H 'x-user-group: testers'; done | count)(header match: v2 only)"
echo
bold "Config through galley and the bus: validated, then read by both pilot replicas"
say "galley checks every resource and publishes the valid ones to the bucket trireme-config; pilot-a (:$xds_port) and pilot-b (:$xds_port_b) read it"
sed -i 's/weight: 90/weight: 50/; s/weight: 10/weight: 50/' "$config_dir/catalog.yaml"
sleep 2
say "accepted edit (catalog.yaml: 90/10 -> 50/50): 100 requests -> $(for _ in $(seq 100); do shop; done | count)"
cat >"$config_dir/catalog-canary.yaml" <<'YAML'
# An edit galley refuses: RE2, and so Envoy, cannot compile this regex.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: catalog-canary, namespace: demo }
spec:
  hosts: [canary.shop.example.com]
  gateways: [shop-gateway]
  http:
  - match: [{ uri: { regex: "/products/([0-9" } }]
    route: [{ destination: { host: catalog.demo.svc.cluster.local, subset: v2 } }]
YAML
sleep 2
say "rejected edit (catalog-canary.yaml, a regex RE2 refuses); trireme analyze says:"
"$bin/trireme" analyze --nats-url "$nats_url" | sed 's/^/    /' || true
say "the last accepted config keeps serving: 100 requests -> $(for _ in $(seq 100); do shop; done | count)"
echo
# mint_pod_secrets <pod root> <namespace> <service account>: what Kubernetes
# mounts into an injected pod: the projected token and the trust bundle.
mint_pod_secrets() {
  local pod_root=$1 namespace=$2 sa=$3
  mkdir -p "$pod_root/var/run/secrets/tokens" "$pod_root/var/run/secrets/istio"
  "$bin/trireme" token mint --key "$run_dir/jwt-signing-key.pem" --issuer "$jwt_issuer" \
    -n "$namespace" --service-account "$sa" --ttl 24h >"$pod_root/var/run/secrets/tokens/istio-token"
  cp "$run_dir/citadel/root-cert.pem" "$pod_root/var/run/secrets/istio/root-cert.pem"
}

# wait_ready <description> <command>...: until the command succeeds (60 s).
wait_ready() {
  local what=$1 deadline=$((SECONDS + 60))
  shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
      echo "error: $what did not become ready; agent logs follow" >&2
      tail -5 "$run_dir"/*-agent.log >&2
      exit 1
    fi
    sleep 0.2
  done
}

# The mesh without root: every workload its own loopback address, the app
# calling its sidecar's egress listener.
start_mesh_on_loopback() {
  mesh_namespace=bookstore
  bold "A sidecar mesh without root (interception mode NONE): productpage -> reviews v1/v2"
  local version pod ip sa labels pilot_port port=15400
  for version in v1 v2; do
    ip=127.0.0.3${version#v}
    python3 "$root/deploy/local/demo-backend.py" "reviews $version" "${mesh_ports[2]}" "$ip" \
      >"$run_dir/reviews-$version.log" 2>&1 &
    pids+=($!)
  done
  # pod, address, service account, labels, pilot replica's port
  for pod in "reviews-v1 127.0.0.31 reviews app=reviews,version=v1 $xds_port_b" \
    "reviews-v2 127.0.0.32 reviews app=reviews,version=v2 $xds_port_b" \
    "productpage-1 127.0.0.30 productpage app=productpage,version=v1 $xds_port"; do
    read -r pod ip sa labels pilot_port <<<"$pod"
    mint_pod_secrets "$run_dir/$pod" bookstore "$sa"
    "$bin/agent" proxy sidecar --root-dir "$run_dir/$pod" --envoy-bin "$envoy_bin" \
      --interception-mode NONE --control-plane-auth-policy NONE \
      --discovery-address "127.0.0.1:$pilot_port" --ca-address "localhost:$ca_port" \
      --pod-name "$pod" --pod-namespace bookstore --instance-ip "$ip" \
      --service-account "$sa" --labels "$labels" --concurrency 1 \
      --status-port "$port" --admin-port $((port + 1)) --stats-port $((port + 2)) \
      --readiness-port $((port + 3)) --termination-drain-duration 1s \
      >"$run_dir/$pod-agent.log" 2>&1 &
    pids+=($!)
    port=$((port + 10))
  done
  for port in 15403 15413 15423; do
    wait_ready "a sidecar" curl -fsS "http://127.0.0.1:$port/healthz/ready"
  done
  reviews() { curl -s -H "host: reviews.bookstore.svc.cluster.local" "http://127.0.0.30:${mesh_ports[0]}/"; }
  plain_to_reviews() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.31:${mesh_ports[1]}/"; }
  mesh_hints=(
    "curl -H 'host: reviews.bookstore.svc.cluster.local' http://127.0.0.30:${mesh_ports[0]}/   (productpage's sidecar)"
    "curl http://127.0.0.1:15421/certs   (productpage's Envoy: its SPIFFE certificate, from SDS)"
  )
}

# The mesh as Istio runs it (root): a network namespace per pod, `agent
# init` capturing its traffic, `agent proxy` as the proxy user 1337, and the
# app calling reviews' virtual IP, knowing nothing of the mesh.
start_mesh_in_pods() {
  mesh_namespace=bookinfo
  bold "A sidecar mesh in network namespaces, traffic captured by iptables: productpage -> reviews v1/v2"
  # The proxy user must reach the binaries and its pod's files.
  local pod_bin="$run_dir/bin" index pod sa labels pilot_port
  mkdir -p "$pod_bin"
  cp -L "$bin/agent" "$envoy_bin" "$pod_bin/"
  chmod 755 "$run_dir" "$pod_bin"
  for index in 1 2; do
    start_in_pod "reviews-v$index" python3 "$root/deploy/local/demo-backend.py" "reviews v$index" 9080 0.0.0.0 \
      >"$run_dir/reviews-v$index.log" 2>&1
  done
  # pod index, service account, labels, pilot replica's port (the pod's
  # name from mesh_pods)
  for pod in "1 bookinfo-reviews app=reviews,version=v1 $xds_port_b" \
    "2 bookinfo-reviews app=reviews,version=v2 $xds_port_b" \
    "0 bookinfo-productpage app=productpage,version=v1 $xds_port"; do
    read -r index sa labels pilot_port <<<"$pod"
    pod="${mesh_pods[$index]}"
    mint_pod_secrets "$run_dir/$pod" bookinfo "$sa"
    chown -R 1337:1337 "$run_dir/$pod"
    # The init container: capture rules into this pod's namespace.
    in_pod "$pod" "$pod_bin/agent" init >"$run_dir/$pod-init.log" 2>&1
    start_in_pod "$pod" setpriv --reuid=1337 --regid=1337 --clear-groups \
      "$pod_bin/agent" proxy sidecar --root-dir "$run_dir/$pod" --envoy-bin "$pod_bin/envoy" \
      --control-plane-auth-policy NONE --discovery-address "$node_ip:$pilot_port" \
      --ca-address "$node_ip:$ca_port" --ca-server-name localhost \
      --pod-name "$pod" --pod-namespace bookinfo --instance-ip "$(pod_ip "$index")" \
      --service-account "$sa" --labels "$labels" --concurrency 1 \
      --termination-drain-duration 1s >"$run_dir/$pod-agent.log" 2>&1
  done
  for pod in reviews-v1 reviews-v2 productpage; do
    wait_ready "$pod's sidecar" in_pod "$pod" curl -fsS http://127.0.0.1:15021/healthz/ready
  done
  say "pods: $(for i in 0 1 2 3; do printf '%s %s  ' "${mesh_pods[$i]}" "$(pod_ip "$i")"; done)"
  say "each ran 'agent init' (iptables: outbound -> 15001, inbound -> 15006, uid 1337 exempt; see $run_dir/*-init.log)"
  reviews() { in_pod productpage curl -s http://10.96.0.20:9080/; }
  plain_to_reviews() { in_pod outsider curl -s -o /dev/null -w '%{http_code}' "http://$(pod_ip 1):9080/"; }
  mesh_hints=(
    "ip netns exec $(pod_ns productpage) curl http://10.96.0.20:9080/   (productpage's app: plain HTTP to reviews' VIP)"
    "ip netns exec $(pod_ns productpage) curl http://127.0.0.1:15000/certs   (its Envoy's SPIFFE certificate, from SDS)"
    "ip netns exec $(pod_ns productpage) iptables-save -t nat   (the capture rules)"
  )
}

if [[ "$pods" == netns ]]; then
  start_mesh_in_pods
else
  start_mesh_on_loopback
fi
say "three agents ready: each got a certificate from citadel (JWT-authenticated) and serves it to its Envoy over SDS"
say "100 plain-HTTP requests from productpage's app -> $(for _ in $(seq 100); do reviews | cut -d' ' -f1-2; done | count)(VirtualService: 90/10)"
say "what reviews sees of its caller: $(reviews | sed 's/^[^(]*(//; s/)$//')"
plain="$(plain_to_reviews || true)"
[[ "$plain" == 000 ]] && plain="refused (connection closed)" || plain="answered $plain"
say "mutual TLS between the sidecars; a plain-text call to reviews from outside the mesh: $plain"
say "  (PeerAuthentication STRICT in namespace $mesh_namespace)"
echo
bold "Every proxy and its pilot replica (trireme proxy-status, from the bus)"
sleep 2
"$bin/trireme" proxy-status --nats-url "$nats_url" | sed 's/^/  /' || true
echo
bold "Sidecar injection: the injector's webhook (https://127.0.0.1:$injector_webhook_port/inject) and trireme kube-inject, one code"
say "trireme kube-inject --explain -f deploy/local/k8s/bookinfo.yaml (its Namespace has istio-injection=enabled):"
"$bin/trireme" kube-inject --explain -f deploy/local/k8s/bookinfo.yaml | sed 's/^/    /'
"$bin/trireme" kube-inject -f deploy/local/k8s/bookinfo.yaml -o "$run_dir/bookinfo-injected.yaml" 2>/dev/null
say "injected YAML: $run_dir/bookinfo-injected.yaml (the Service passes through unchanged)"
review="$(curl -sS --cacert "$webhook_tls/cert-chain.pem" -H 'content-type: application/json' \
  --data-binary @deploy/local/k8s/reviews-pod-admission.json "https://127.0.0.1:$injector_webhook_port/inject")"
python3 - "$review" <<'SUMMARY' | sed 's/^/  /'
import base64, json, sys
response = json.loads(sys.argv[1])["response"]
patch = json.loads(base64.b64decode(response["patch"]))
added = {op["path"]: op.get("value") for op in patch}
def names(path):
    value = added.get(path)
    if isinstance(value, list):
        return [item["name"] for item in value]
    return [v["name"] for p, v in added.items() if p.startswith(path + "/") and isinstance(v, dict) and "name" in v]
print(f"webhook answer for a reviews-v1 pod CREATE: allowed={str(response['allowed']).lower()}, "
      f"{response['patchType']} of {len(patch)} operations")
print(f"  adds init container(s) {', '.join(names('/spec/initContainers'))} and container(s) "
      f"{', '.join(names('/spec/containers'))}, as uid 1337 with a read-only root filesystem")
probe = [op for op in patch if op["path"].startswith("/spec/containers/0/readinessProbe")]
if probe:
    print("  rewrites reviews' readiness probe to the agent: /app-health/reviews/readyz on 15020")
SUMMARY
say "$(curl -s "http://127.0.0.1:${http_port[injector]}/metrics" | grep -E '^sidecar_injection_(requests|success)_total' | tr '\n' ' ')"
echo
bold "Try it"
say "curl -H 'host: shop.example.com' http://127.0.0.1:$gateway_port/products"
say "edit $config_dir/catalog.yaml (e.g. the weights): galley publishes it, both pilots push it within a second"
say "$bin/trireme analyze --nats-url $nats_url   (galley's verdicts: why a resource is not in effect)"
say "curl http://127.0.0.1:${http_port[pilot]}/debug/config_dump?proxyID=router~127.0.0.1~shop-gateway-1.demo~demo.svc.cluster.local"
say "  (ask the replica proxy-status names: pilot-a on :${http_port[pilot]}, pilot-b on :${http_port[pilot-b]})"
for hint in "${mesh_hints[@]}"; do say "$hint"; done
say "curl http://127.0.0.1:${http_port[pilot]}/debug/syncz   (every proxy, what it was sent and ACKed)"
echo
bold "On Kubernetes: deploy/kubernetes (kustomize; README \"Run on Kubernetes\")"
if command -v kubectl >/dev/null 2>&1; then
  for overlay in dev ha; do
    objects=$(kubectl kustomize "deploy/kubernetes/overlays/$overlay" | awk '/^kind:/{print $2}' | sort | uniq -c |
      awk '{printf "%s %s, ", $1, $2}')
    say "overlays/$overlay renders: ${objects%, }"
  done
  say "install: kubectl apply -k deploy/kubernetes/overlays/dev"
else
  say "(kubectl not found: install kubectl 1.32+ to render the manifests)"
fi
echo

bold "Not here yet"
[[ "$pods" == netns ]] || say "traffic capture with iptables (agent init): run the demo as root to see it;"
say "a Kubernetes API server (none runs on this machine): pilot's registry, the CRD intake and the leader-elected"
say "webhook and trust-bundle jobs are tested against built objects, watch events and a fake API server."
echo

if [[ "${TRIREME_DEMO_ONESHOT:-}" == 1 || "${CI:-}" == true ]]; then
  exit 0
fi
bold "Running. Try: curl http://127.0.0.1:${http_port[pilot]}/metrics   Press Ctrl-C to stop."
wait "${pids[@]}" "$nats_pid"
