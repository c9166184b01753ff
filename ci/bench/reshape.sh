#!/usr/bin/env bash
# Times two reshapes on a local cluster (release build, loopback, this machine):
#   join  - 3 nodes with 64 hash partitions and DATA_MB of data; a 4th node joins and the
#           placement driver moves its share to it: replicas moved, bytes it received
#           (its snapshot files), seconds until the map reaches the driver's targets;
#   move  - one range holding MOVE_MB; seconds for `faultline kv move` to add a replica
#           on a 4th node (a snapshot of the whole range), promote it and remove one.
# Usage: ci/bench/reshape.sh [join|move|all]   (run from the repository root)
set -euo pipefail
what=${1:-all}
BIN=${BIN:-target/release}
NODE=$BIN/faultline-node
CLI=$BIN/faultline
DATA_MB=${DATA_MB:-16}
MOVE_MB=${MOVE_MB:-64}
dir=$(mktemp -d /tmp/fl-reshape.XXXX)
trap 'pkill -f "faultline-node --id [0-9]+ --listen 127.0.0.1:76" || true; rm -rf "$dir"' EXIT

start3() {  # $@: layout flags
  for i in 1 2 3; do
    peers=$(for j in 1 2 3; do if [ "$j" != "$i" ]; then printf -- "--peer $j=127.0.0.1:760$j "; fi; done)
    # shellcheck disable=SC2086
    $NODE --id $i --listen 127.0.0.1:760$i $peers --data-dir "$dir/$i" "$@" 2>"$dir/$i.log" &
  done
  sleep 2
}

load() {  # $1: megabytes, in values of 85 KiB (base64 of 64 KiB: one argument holds at most 128 KiB)
  local n=$(( $1 * 1024 * 1024 / 87384 + 1 ))
  for k in $(seq 1 $n); do
    $CLI kv --endpoint 127.0.0.1:7601 --timeout-ms 20000 put "key-$k" \
      "$(head -c 65536 /dev/urandom | base64 -w0)" >/dev/null
  done
}

if [ "$what" = join ] || [ "$what" = all ]; then
  start3 --partitions 64 --partitioning hash --placement on
  load "$DATA_MB"
  t0=$(date +%s.%N)
  $NODE --id 4 --listen 127.0.0.1:7604 --join 127.0.0.1:7601 --data-dir "$dir/4" 2>"$dir/4.log" &
  while :; do
    on4=$($CLI kv --endpoint 127.0.0.1:7601 map --json | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(sum(4 in p["replicas"] for p in m), sum(bool(p["learners"]) for p in m))')
    set -- $on4
    # Settled: the moves stopped (no learner) and node 4 is where the targets put it.
    if [ "$2" = 0 ] && [ "$1" -gt 0 ] && grep -q "placement" "$dir"/[123].log && \
       ! tail -n 5 "$dir"/[123].log | grep -q "moving a replica"; then
      sleep 2
      again=$($CLI kv --endpoint 127.0.0.1:7601 map --json | python3 -c '
import json, sys
print(sum(4 in p["replicas"] for p in json.load(sys.stdin)))')
      [ "$again" = "$1" ] && break
    fi
    sleep 0.5
  done
  t1=$(date +%s.%N)
  moves=$(grep -h "placement: moving a replica" "$dir"/[123].log | wc -l)
  bytes=$(du -sb "$dir/4/snapshots" | cut -f1)
  echo "join: $1 of 192 replicas on the new node ($moves moves), $(( bytes / 1024 / 1024 )) MiB of snapshots received, $(python3 -c "print(f'{$t1 - $t0 - 2:.1f}')") s to settle (data ${DATA_MB} MiB)"
  sleep 3   # leaders even out after the moves
  $CLI kv --endpoint 127.0.0.1:7601 map --json | python3 -c '
import json, sys
m = json.load(sys.stdin)
reps, leads = {}, {}
for p in m:
    for n in p["replicas"]:
        reps[n] = reps.get(n, 0) + 1
    if p["leader"]:
        leads[p["leader"]] = leads.get(p["leader"], 0) + 1
mean = sum(reps.values()) / len(reps)
print(f"join: replicas per node {dict(sorted(reps.items()))} (max/mean {max(reps.values()) / mean:.3f}), leaders per node {dict(sorted(leads.items()))}")'
  pkill -f "faultline-node --id [0-9]+ --listen 127.0.0.1:76" || true
  sleep 1
  rm -rf "${dir:?}"/*
fi

if [ "$what" = move ] || [ "$what" = all ]; then
  start3 --partitions 1 --partitioning range --placement off
  $NODE --id 4 --listen 127.0.0.1:7604 --join 127.0.0.1:7601 --data-dir "$dir/4" 2>"$dir/4.log" &
  load "$MOVE_MB"
  sleep 1
  leader=$($CLI kv --endpoint 127.0.0.1:7601 map --json | python3 -c '
import json, sys
print(json.load(sys.stdin)[0]["leader"])')
  from=$(( leader % 3 + 1 ))
  t0=$(date +%s.%N)
  $CLI kv --endpoint 127.0.0.1:7602 --timeout-ms 300000 move 1 --from $from --to 4
  t1=$(date +%s.%N)
  echo "move: ${MOVE_MB} MiB range, replica n$from -> n4, $(python3 -c "print(f'{$t1 - $t0:.2f}')") s"
fi
