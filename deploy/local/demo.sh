#!/usr/bin/env bash
# Local launcher behind `make demo`: starts nats-server (JetStream) and the
# control-plane services on this machine, shows that each is up and ready,
# checks the demo config, and stops everything on Ctrl-C.
#
# Ports (override by environment): NATS 14222, pilot 15014, citadel 15114,
# galley 15214, injector 15314 (each service's /metrics and /healthz/*).
# TRIREME_DEMO_ONESHOT=1 stops after showing the status instead of waiting.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/target/debug"
nats_bin="${NATS_SERVER_BIN:-$root/.tools/bin/nats-server}"
cd "$root"
config_dir="${TRIREME_DEMO_CONFIG:-deploy/local/config}"
run_dir="$(mktemp -d -t trireme-demo.XXXXXX)"

nats_port="${TRIREME_DEMO_NATS_PORT:-14222}"
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
trap stop_all INT TERM EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$nats_port" "${http_port[@]}"; do
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

for svc in "${services[@]}"; do
  TRIREME_HTTP_ADDR="127.0.0.1:${http_port[$svc]}" \
  TRIREME_NATS_URL="nats://127.0.0.1:$nats_port" \
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
bold "What is not here yet"
say "pilot does not serve xDS, citadel does not sign, galley does not publish"
say "config, and no workloads run: those arrive with the next issues."
echo

if [[ "${TRIREME_DEMO_ONESHOT:-}" == 1 || "${CI:-}" == true ]]; then
  exit 0
fi
bold "Running. Try: curl http://127.0.0.1:${http_port[pilot]}/metrics   Press Ctrl-C to stop."
wait "${pids[@]}" "$nats_pid"
