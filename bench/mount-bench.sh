#!/usr/bin/env bash
# bench/mount-bench.sh CAIRN_MOUNT [LABEL]: /work/shared/bench/dfs/bench-fs.sh (the script that
# measured ext4, GlusterFS and MooseFS here) on a local directory, on a passthrough FUSE file
# system through Cairn's binding (bench/fuse-passthrough.ts: the binding's ceiling) and on
# CAIRN_MOUNT, in one run. Knobs as bench-fs.sh (SEQ_SIZE, RAND_RUNTIME, NFILES, NTX); results
# (KEY=VALUE) go to bench/results/mount-<what>.txt, each full log to mount-<what>.log (its @@phase
# marks date the phases, e.g. to cut a daemon's --cpu-prof). The passthrough gets the Cairn mount's
# kernel read-ahead (PT_READ_AHEAD_KB, default 1024 as src/fuse/mount.ts).
set -u
MNT=${1:?usage: mount-bench.sh CAIRN_MOUNT [LABEL]}
LABEL=${2:-cairn}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_FS:-/work/shared/bench/dfs/bench-fs.sh}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
W=$(mktemp -d /tmp/mount-bench.XXXXXX)
mkdir -p "$W/local" "$W/back" "$W/pt"
PT_READ_AHEAD_KB=${PT_READ_AHEAD_KB:-1024} node --import tsx "$ROOT/bench/fuse-passthrough.ts" "$W/back" "$W/pt" > "$W/pt.log" 2>&1 &
PT=$!
trap 'kill $PT 2>/dev/null; wait $PT 2>/dev/null; fusermount3 -uz "$W/pt" 2>/dev/null; rm -rf "$W"' EXIT
for i in $(seq 1 60); do grep -q ready "$W/pt.log" && break; sleep 0.5; done
for what in local passthrough "$LABEL"; do
  case $what in local) dir=$W/local ;; passthrough) dir=$W/pt ;; *) dir=$MNT ;; esac
  echo "=== $what ($dir)"
  BENCH_OUT="$OUT/mount-$what.txt" bash "$BENCH" "$dir" "$what" | tee "$OUT/mount-$what.log" | tail -40
done
