#!/usr/bin/env bash
# How soon a person in line learns of their turn, and what it costs in reads: the same
# `waitroom load` scenario against one embedded node (release build), run twice back to back —
#   front: users near the front of the line read their status every second (the waiting page
#          before held reads), the others only heartbeat;
#   held:  users near the front hold a read until their turn comes (`waitSeconds`, the waiting
#          page now), the others only heartbeat —
# and, from each report, the turn notice (first ACTIVE answer received − admittedAt, upper
# bound), the refill latency and the status reads per waiting minute, into OUT/summary.txt
# with both reports (front/, held/).
#
#   bench/turn.sh                      # into bench/results/<UTC date>/turn
#   USERS=20000 ARRIVAL=ramp:60 bench/turn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
USERS="${USERS:-5000}"
ARRIVAL="${ARRIVAL:-ramp:30}"
CAPACITY="${CAPACITY:-100}"
HOLD_SECONDS="${HOLD_SECONDS:-1..3}"
HEARTBEAT_SECONDS="${HEARTBEAT_SECONDS:-10}"
SEED="${SEED:-1}"
out="${OUT:-bench/results/$(date -u +%Y-%m-%d)/turn}"
mkdir -p "$out"

bench_build --bin waitroom --features sqs
bench_start_waitroom turn
summary="$out/summary.txt"
{
  echo "turn: $USERS users over $ARRIVAL into capacity $CAPACITY, each holding $HOLD_SECONDS s, heartbeats every $HEARTBEAT_SECONDS s; one embedded node"
  echo "on $(bench_machine); $(bench_version)"
} >"$summary"
for reads in front held; do
  command=(waitroom load --url "$WAITROOM_URL" --room "turn-$reads" --capacity "$CAPACITY"
    --users "$USERS" --arrival "$ARRIVAL" --hold-seconds "$HOLD_SECONDS" --seed "$SEED"
    --heartbeat-interval-seconds "$HEARTBEAT_SECONDS" --reads "$reads" --poll-interval-ms 1000
    --request-timeout-ms 15000 --connections-max 256 --no-progress --out "$out/$reads")
  echo "== $reads: ${command[*]} (load average before: $(bench_loadavg))" | tee -a "$summary"
  WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "$BENCH_BIN/${command[0]}" "${command[@]:1}" \
    >"$bench_scratch/$reads.stdout" 2>"$bench_scratch/$reads.stderr" \
    || { cat "$bench_scratch/$reads.stderr" >&2; exit 1; }
  grep -E '^(users|fifo|refill|turn|overshoot)' "$bench_scratch/$reads.stdout" | tee -a "$summary" || true
done
python3 - "$out" >>"$summary" <<'PY'
import json, sys
out = sys.argv[1]
rows = []
for reads in ("front", "held"):
    m = json.load(open(f"{out}/{reads}/report.json"))["metrics"]
    notice = m["turnNotice"]["upperBoundMs"] or {}
    refill = m["refillLatency"]["upperBoundMs"] or {}
    rows.append((reads, m["turnNotice"]["users"], notice.get("p50"), notice.get("p99"), notice.get("max"),
                 refill.get("p50"), refill.get("p99"), m["readsPerWaitingMinute"]))
print("\n| reads | users who waited | turn noticed after admission, ms p50 / p99 / max | refill ms p50 / p99 | status reads per waiting minute |")
print("| --- | --- | --- | --- | --- |")
for reads, users, p50, p99, mx, r50, r99, per in rows:
    print(f"| {reads} | {users} | {p50} / {p99} / {mx} | {r50} / {r99} | {per:.2f} |")
PY
cat "$summary"
