# Pods on one node, for `make demo` as root: a network namespace per pod with
# an eth0 in 10.233.0.0/24, all joined by the bridge trireme0 (10.233.0.1,
# the node, where pilot and citadel listen). Sourced by demo.sh.

pod_bridge=trireme0
pod_subnet=10.233.0
node_ip="$pod_subnet.1"

# pod_ns <pod>: the namespace's name.
pod_ns() { printf 'trireme-%s' "$1"; }

# pod_network_down <pod>...: removes what pod_network_up made (and what a
# demo that was killed left behind).
pod_network_down() {
  local pod ns
  for pod in "$@"; do
    ns="$(pod_ns "$pod")"
    # A namespace lives on while processes run in it: stop them first.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -TERM 2>/dev/null || true
  done
  sleep 0.5
  for pod in "$@"; do
    ns="$(pod_ns "$pod")"
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  iptables -D FORWARD -i "$pod_bridge" -o "$pod_bridge" -j ACCEPT 2>/dev/null || true
  ip link del "$pod_bridge" 2>/dev/null || true
  # Host ends of veth pairs whose pod end outlived its namespace's name.
  local link
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep '^trireme-v' | cut -d@ -f1); do
    ip link del "$link" 2>/dev/null || true
  done
}

# pod_network_up <pod>...: the bridge, then one namespace per pod, addressed
# .10, .11, ... in order, with its default route via the node.
pod_network_up() {
  pod_network_down "$@"
  ip link add "$pod_bridge" type bridge
  ip addr add "$node_ip/24" dev "$pod_bridge"
  ip link set "$pod_bridge" up
  # With br_netfilter, bridged frames cross the FORWARD chain, whose policy
  # may be DROP (Docker sets it so).
  iptables -I FORWARD -i "$pod_bridge" -o "$pod_bridge" -j ACCEPT
  local pod host=10 ns
  for pod in "$@"; do
    ns="$(pod_ns "$pod")"
    ip netns add "$ns"
    ip link add "trireme-v$host" type veth peer name eth0 netns "$ns"
    ip link set "trireme-v$host" master "$pod_bridge" up
    ip -n "$ns" addr add "$pod_subnet.$host/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$node_ip"
    host=$((host + 1))
  done
}

# pod_ip <index>: the address of the index-th pod given to pod_network_up.
pod_ip() { printf '%s.%s' "$pod_subnet" $((10 + $1)); }

# in_pod <pod> <command>...: runs the command inside the pod's namespace.
in_pod() {
  local pod=$1
  shift
  ip netns exec "$(pod_ns "$pod")" "$@"
}

# start_in_pod <pod> <command>...: starts the command in the background
# inside the pod's namespace and adds its pid to `pids` (`ip netns exec`
# execs the command, so that pid is the command's own).
start_in_pod() {
  local pod=$1
  shift
  ip netns exec "$(pod_ns "$pod")" "$@" &
  pids+=($!)
}

# can_run_pods: whether this machine lets the demo make pods (root, tools).
can_run_pods() {
  [[ $EUID -eq 0 ]] || return 1
  local tool
  for tool in ip iptables iptables-restore setpriv; do
    command -v "$tool" >/dev/null || return 1
  done
}
