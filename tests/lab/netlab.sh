#!/usr/bin/env bash
# netlab.sh - veche's test lab: a simulated internet and NATed LANs in network namespaces
# (run as root). The tests in tests/net_lab.rs drive it; it is also handy by hand.
# Adapted from the project's shared lab recipe; no impairment wire (tests here need none).
#
#   netlab.sh up [cone|symmetric]     build topology (NAT type for every router; default cone)
#   netlab.sh down                    kill everything in our namespaces + recorded PIDs, delete them
#   netlab.sh exec NS CMD...          run CMD in NS (foreground), with lab resolv.conf/hosts
#   netlab.sh spawn NS LOG CMD...     same, in background; prints PID (== CMD's PID) and records it
#   netlab.sh fwd NS NSPORT LOCALPORT  expose NS's 127.0.0.1:NSPORT on root 127.0.0.1:LOCALPORT
#   netlab.sh nat ROUTER cone|symmetric [keep]   switch a router's NAT behaviour (flushes its
#                                      conntrack, unless keep: flows under way keep their mapping)
#   netlab.sh loss NS PCT             random loss on NS, both directions (iptables statistic)
#   netlab.sh rate NS IFACE RATE      egress rate limit (tbf), e.g. 2mbit
#   netlab.sh unrate NS IFACE         lift it
#   Env: NL_PREFIX (namespace name prefix, allows parallel labs), NL_STATE (state directory)
#
# Topology (names get $NL_PREFIX in front):
#   wan   : bridge br0 only = "the internet" (no IP, no forwarding)
#   pub   : 203.0.113.10 (relay / bootstrap / rendezvous host)     lab hostname pub.lab
#   natN  : wan 203.0.113.1N, LAN 10.N.0.1/24 on its bridge br0, MASQUERADE + stateful FW
#   lanNx : 10.N.0.(10+x) behind natN (x=a->11, b->12...); hosts of one natN share an L2 segment
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
P=${NL_PREFIX:-}
ST=${NL_STATE:-${TMPDIR:-/tmp}/netlab-${P:-default}}
LAN_HOSTS=${NL_LAN_HOSTS:-"1:a 1:b 1:c 2:a"}   # <nat#>:<letter>
NATS=${NL_NATS:-"1 2"}

ns() { ip netns exec "$P$1" "${@:2}"; }
mkns() {
  ip netns add "$P$1"; echo "$P$1" >> "$ST/namespaces"
  ns "$1" ip link set lo up
  ns "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
}
# br_netfilter is built into this kernel and is ON in every new netns: bridged frames would
# traverse the namespace's iptables FORWARD chain (policy DROP on routers) -> LAN hosts can't talk.
nobrnf() { ns "$1" sysctl -qw net.bridge.bridge-nf-call-iptables=0 \
  net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0; }
# link A IF_A B IF_B: a veth pair created directly inside both namespaces.
link() {
  ip link add "$2" netns "$P$1" type veth peer name "$4" netns "$P$3"
}
set_nat() {
  local extra=""; [ "$2" = symmetric ] && extra="--random-fully"
  ns "$1" iptables -t nat -F POSTROUTING
  ns "$1" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE $extra
  [ "${3:-}" = keep ] || ns "$1" conntrack -F >/dev/null 2>&1 || true
}

up() {
  local mode=${1:-cone}
  [ -e "$ST/namespaces" ] && { echo "lab $ST exists; run down first" >&2; exit 1; }
  mkdir -p "$ST/etc"; : > "$ST/namespaces"; : > "$ST/pids"
  # fast-failing DNS inside the lab (otherwise every lookup stalls 5 s) + lab host names
  printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' > "$ST/etc/resolv.conf"
  printf '127.0.0.1 localhost\n203.0.113.10 pub.lab\n' > "$ST/etc/hosts"
  mkns wan; ns wan ip link add br0 type bridge; ns wan ip link set br0 up; nobrnf wan
  mkns pub; link pub eth0 wan pub
  ns wan ip link set pub master br0 up
  ns pub ip addr add 203.0.113.10/24 dev eth0; ns pub ip link set eth0 up
  ns pub ip route add 224.0.0.0/4 dev eth0          # no default route: multicast needs one
  for n in $NATS; do
    local r="nat$n"
    mkns "$r"; link "$r" wan wan "$r"
    ns wan ip link set "$r" master br0 up
    ns "$r" ip addr add "203.0.113.1$n/24" dev wan; ns "$r" ip link set wan up
    ns "$r" ip link add br0 type bridge; nobrnf "$r"
    ns "$r" ip addr add "10.$n.0.1/24" dev br0; ns "$r" ip link set br0 up
    ns "$r" ip route add 224.0.0.0/4 dev br0
    ns "$r" sysctl -qw net.ipv4.ip_forward=1
    ns "$r" iptables -P FORWARD DROP
    ns "$r" iptables -A FORWARD -i br0 -o wan -j ACCEPT
    ns "$r" iptables -A FORWARD -i wan -o br0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ns "$r" iptables -A FORWARD -i br0 -o br0 -j ACCEPT
    # Silently DROP unsolicited WAN packets to the router itself. Realistic, and REQUIRED for
    # hole punching: a dropped packet's conntrack entry is never confirmed, so the peer's early
    # punch packet can't squat the reply tuple and force MASQUERADE to pick another port.
    ns "$r" iptables -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ns "$r" iptables -A INPUT -i wan -j DROP
    set_nat "$r" "$mode"
  done
  for h in $LAN_HOSTS; do
    local n=${h%%:*} l=${h#*:}; local name="lan$n$l" ip="10.$n.0.$(( $(printf '%d' "'$l") - 86 ))"
    mkns "$name"; link "$name" eth0 "nat$n" "$name"
    ns "nat$n" ip link set "$name" master br0 up
    ns "$name" ip addr add "$ip/24" dev eth0; ns "$name" ip link set eth0 up
    ns "$name" ip route add default via "10.$n.0.1"
    echo "$ip $name.lab" >> "$ST/etc/hosts"
    ns "$name" ping -c1 -W2 "10.$n.0.1" > /dev/null || true   # warm ARP (first packet otherwise may wait)
  done
}

down() {
  # stale lab from a killed run without state file: with a prefix, namespaces are ours by name
  if [ ! -f "$ST/namespaces" ] && [ -n "$P" ]; then
    mkdir -p "$ST"; : > "$ST/pids"; ip netns list | awk '{print $1}' | grep "^$P" > "$ST/namespaces" || true
  fi
  [ -f "$ST/namespaces" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$ST/pids"
  local n pid
  for n in $(cat "$ST/namespaces"); do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  sleep 0.5
  for n in $(cat "$ST/namespaces"); do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$ST"
}

# run in NS with private mount ns so /etc/resolv.conf + /etc/hosts are the lab's (no PID change:
# ip netns exec, unshare and sh all exec)
inns() {
  local n=$1; shift
  exec ip netns exec "$P$n" unshare -m --propagation private sh -c \
    'mount --bind "$0/resolv.conf" /etc/resolv.conf && mount --bind "$0/hosts" /etc/hosts && exec "$@"' \
    "$ST/etc" "$@"
}

cmd=${1:-}; shift || true
case "$cmd" in
  up)    up "$@" ;;
  down)  down ;;
  exec)  inns "$@" ;;
  spawn) n=$1; log=$2; shift 2
         ( inns "$n" "$@" ) > "$log" 2>&1 < /dev/null &
         echo $! >> "$ST/pids"; echo $! ;;
  nat)   set_nat "$1" "$2" "${3:-}" ;;
  fwd)   # fwd NS NSPORT LOCALPORT: root-ns 127.0.0.1:LOCALPORT -> NS's 127.0.0.1:NSPORT (e.g. chromedriver)
         socat TCP-LISTEN:"$3",bind=127.0.0.1,reuseaddr,fork \
           EXEC:"ip netns exec $P$1 socat STDIO TCP\:127.0.0.1\:$2" > "$ST/fwd-$1-$2.log" 2>&1 < /dev/null &
         echo $! >> "$ST/pids"; echo $! ;;
  loss)  p=$(awk "BEGIN{print $2/100}")
         ns "$1" iptables -A INPUT  -m statistic --mode random --probability "$p" -j DROP
         ns "$1" iptables -A OUTPUT -m statistic --mode random --probability "$p" -j DROP ;;
  rate)  ns "$1" tc qdisc replace dev "$2" root tbf rate "$3" burst 32kbit latency 400ms ;;
  unrate) ns "$1" tc qdisc del dev "$2" root ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
