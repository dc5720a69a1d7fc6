#!/usr/bin/env bash
# The embedded join path of two builds, A and B, side by side: joins/s, the node's CPU per join
# (user + system, from /proc) and its context switches per join (every thread's, voluntary and
# not), from `wrk -c64` runs against each node in turn, interleaved so that noise from other
# processes hits both. CPU and context switches per join move less with the machine's load than
# joins/s, so they say more on a shared machine. For experiments on the join path (issue 14):
# build a variant, copy its binary aside, and compare it with the current build.
#
#   bench/join-ab.sh A_BIN B_BIN             # 6 pairs of 4 s runs
#   REPEAT=10 DURATION=10s OUT=dir bench/join-ab.sh A_BIN B_BIN
#
# A_BIN and B_BIN are `waitroom` binaries (or scripts that exec one, to set its environment).
# Each node is a fresh embedded node (file log, default fsync policy) with a room of capacity
# 100 that everyone waits in. Prints one line per run and the medians; OUT keeps them (ab.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
[ $# -eq 2 ] || { echo "usage: bench/join-ab.sh A_BIN B_BIN" >&2; exit 2; }
DURATION="${DURATION:-4s}"
REPEAT="${REPEAT:-6}"
CONNECTIONS="${CONNECTIONS:-64}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
out="${OUT:-$bench_scratch/join-ab}"
mkdir -p "$out"

A_NAME="$1"; B_NAME="$2"
declare -A urls pids binaries=([a]="$1" [b]="$2")
for side in a b; do
  binary="${binaries[$side]}"
  dir="$bench_scratch/$side"
  mkdir -p "$dir"
  WAITROOM_LOG=warn "$binary" serve --listen 127.0.0.1:0 --data-dir "$dir/data" \
    --admin-token "$BENCH_ADMIN_TOKEN" --join-rate-per-ip 0 >"$dir/stdout" 2>"$dir/stderr" &
  pids[$side]=$!
  bench_pids+=("$!")
  urls[$side]="$(bench_url "$dir/stdout" "waitroom is")"
  for _ in $(seq 1 100); do curl -sf "${urls[$side]}/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf -X PUT "${urls[$side]}/api/waiting-room/rooms/bench" -H "Authorization: Bearer $BENCH_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' \
    -d '{"capacity":100,"waitingIdleTimeoutSeconds":3600,"activeIdleTimeoutSeconds":3600,"maxActiveSeconds":7200,"heartbeatIntervalSeconds":10}' >/dev/null
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n}'; }

{
  echo "# A: $A_NAME"
  echo "# B: $B_NAME"
  echo "# wrk -t1 -c$CONNECTIONS -d$DURATION joins, $REPEAT pairs, on $(bench_machine); load average at start: $(bench_loadavg)"
  echo "# side joins_per_s node_cpu_us_per_join context_switches_per_join"
} >"$out/ab.txt"
ticks_per_s="$(getconf CLK_TCK)"
for _ in $(seq 1 "$REPEAT"); do
  for side in a b; do
    pid="${pids[$side]}"
    c0="$(cpu_ticks "$pid")"; s0="$(switches "$pid")"
    result="$(ROOM=bench wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s bench/join.lua "${urls[$side]}")"
    c1="$(cpu_ticks "$pid")"; s1="$(switches "$pid")"
    python3 - "$side" "$c0" "$c1" "$s0" "$s1" "$ticks_per_s" <<PY | tee -a "$out/ab.txt"
import sys
side, c0, c1, s0, s1, hz = sys.argv[1], *map(int, sys.argv[2:])
text = """$result"""
rate = next(float(l.split()[1]) for l in text.splitlines() if l.startswith("Requests/sec:"))
n = next(int(l.split()[0]) for l in text.splitlines() if "requests in" in l)
print(f"{side} {rate:.0f} {(c1 - c0) / hz / n * 1e6:.2f} {(s1 - s0) / n:.3f}")
PY
  done
done
echo "# load average at end: $(bench_loadavg)" >>"$out/ab.txt"
python3 - "$out/ab.txt" <<'PY' | tee -a "$out/ab.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l[:2] in ("a ", "b ")]
col = lambda side, i: [float(r[i]) for r in rows if r[0] == side]
for i, name in ((1, "joins/s"), (2, "node CPU µs per join"), (3, "context switches per join")):
    a, b = statistics.median(col("a", i)), statistics.median(col("b", i))
    print(f"{name}: A median {a:g}, B median {b:g}, B/A {b / a:.3f}")
pairs = [round(y / x, 2) for x, y in zip(col("a", 1), col("b", 1))]
print(f"joins/s B/A pair by pair: {pairs}")
PY
