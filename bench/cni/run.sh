#!/usr/bin/env bash
# CNI plugin benchmark: N ADD+DEL cycles of one conflist through weft's
# plugins and through Debian's reference plugins (/usr/lib/cni), run the way
# a runtime runs them (exec per plugin, prevResult chaining), first
# bridge + host-local, then bridge + host-local + portmap. Prints median and
# p99 per operation and the ratio reference / weft (higher: weft faster).
#
#   sudo bench/cni/run.sh [CYCLES]     # CYCLES: 1..10000, default 200
#
# Everything happens inside throwaway namespaces named weft-bench-*: one per
# implementation standing in for the node (the plugins run inside it, the
# bridge and the NAT rules live there) and one for the container. They are
# deleted at the end, on error and on Ctrl-C. Nothing is installed: it uses
# cargo, ip and the reference plugins that ./scripts/test installs.
set -euo pipefail
cd "$(dirname "$0")/../.."

cycles="${1:-200}"
if ! [[ "$cycles" =~ ^[0-9]+$ ]] || [ "$cycles" -lt 1 ] || [ "$cycles" -gt 10000 ]; then
  echo "bench/cni: CYCLES must be a number between 1 and 10000" >&2
  exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/cni: must run as root: it creates network namespaces" >&2
  exit 1
fi
reference=/usr/lib/cni
for plugin in bridge host-local portmap; do
  [ -x "$reference/$plugin" ] || { echo "bench/cni: $reference/$plugin missing (apt-get install containernetworking-plugins)" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p weft >&2
cargo build --release --offline --manifest-path bench/cni/harness/Cargo.toml >&2
harness="$target/release/weft-bench-cni"

run_id="$$"
work="$(mktemp -d /tmp/weft-bench-cni.XXXXXX)"
namespaces=()
cleanup() {
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$target/release/weft" cni install --bin-dir "$work/weft-bin" >&2

# One series: a fresh node namespace, a fresh data dir, one container namespace.
series() { # label plugin-dir [--portmap]
  local label="$1" plugins="$2"; shift 2
  local node="weft-bench-$run_id-$label-node" container="weft-bench-$run_id-$label-c"
  ip netns add "$node"; namespaces+=("$node")
  ip netns add "$container"; namespaces+=("$container")
  ip -n "$node" link set lo up
  rm -rf "$work/data"; mkdir -p "$work/data"
  ip netns exec "$node" "$harness" --label "$label" --plugins "$plugins" \
    --netns "/run/netns/$container" --data-dir "$work/data" --cycles "$cycles" "$@"
  ip netns del "$container"; ip netns del "$node"
}

results="$work/results"
: > "$results"
for chain in "" "--portmap"; do
  series weft "$work/weft-bin" $chain | tee -a "$results" >&2
  series reference "$reference" $chain | tee -a "$results" >&2
done

echo "CNI ADD+DEL, $cycles cycles each (+5 warm-up), $(nproc) CPUs, kernel $(uname -r); times in ms"
awk '
  /^RESULT/ { key = $3; impl = $2
    add50[impl,key] = $4 / 1000; add99[impl,key] = $5 / 1000
    del50[impl,key] = $6 / 1000; del99[impl,key] = $7 / 1000
    if (!(key in seen)) { seen[key] = 1; order[++n] = key } }
  END {
    printf "%-27s %-4s %10s %10s %10s %10s %8s\n", "chain", "op", "weft p50", "weft p99", "ref p50", "ref p99", "ratio"
    for (i = 1; i <= n; i++) { k = order[i]
      printf "%-27s %-4s %10.2f %10.2f %10.2f %10.2f %7.2fx\n", k, "ADD", add50["weft",k], add99["weft",k], add50["reference",k], add99["reference",k], add50["reference",k] / add50["weft",k]
      printf "%-27s %-4s %10.2f %10.2f %10.2f %10.2f %7.2fx\n", k, "DEL", del50["weft",k], del99["weft",k], del50["reference",k], del99["reference",k], del50["reference",k] / del50["weft",k]
      w = add50["weft",k] + del50["weft",k]; r = add50["reference",k] + del50["reference",k]
      printf "%-27s %-4s %10.2f %10s %10.2f %10s %7.2fx\n", k, "both", w, "", r, "", r / w
    } }' "$results"
