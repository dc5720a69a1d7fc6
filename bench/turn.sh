#!/usr/bin/env bash
# How soon a person in line learns of their turn, and what it costs in reads: the same
# `waitroom load` scenario against one embedded node (release build), once per mode of READS,
# back to back (all three by default) —
#   front:     users near the front of the line, by their own judgement (next, a short estimate,
#              or their own progress), read their status every second (the waiting page before
#              held reads), the others only heartbeat;
#   held:      the same users hold a read until their turn comes (`waitSeconds`; the waiting page
#              before `turnSoon`), the others only heartbeat; the node holds reads only for views
#              that say `turnSoon` and answers the others at once (they then read once a second);
#   turn-soon: users whose view says `turnSoon` (the room's judgement) hold a read until their
#              turn comes (the waiting page now), the others only heartbeat —
# and, from each report, the turn notice (first ACTIVE answer received − admittedAt, upper
# bound), the refill latency and the status reads per waiting minute, into OUT/summary.txt
# with every run's report (front/, held/, turn-soon/).
#
#   bench/turn.sh                      # into bench/results/<UTC date>/turn
#   USERS=20000 ARRIVAL=ramp:60 bench/turn.sh
#   READS="held turn-soon" bench/turn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
USERS="${USERS:-5000}"
ARRIVAL="${ARRIVAL:-ramp:30}"
CAPACITY="${CAPACITY:-100}"
HOLD_SECONDS="${HOLD_SECONDS:-1..3}"
HEARTBEAT_SECONDS="${HEARTBEAT_SECONDS:-10}"
SEED="${SEED:-1}"
READS="${READS:-front held turn-soon}"
out="${OUT:-bench/results/$(date -u +%Y-%m-%d)/turn}"
mkdir -p "$out"

bench_build --bin waitroom --features sqs
bench_start_waitroom turn
summary="$out/summary.txt"
{
  echo "turn: $USERS users over $ARRIVAL into capacity $CAPACITY, each holding $HOLD_SECONDS s, heartbeats every $HEARTBEAT_SECONDS s; one embedded node"
  echo "on $(bench_machine); $(bench_version)"
} >"$summary"
for reads in $READS; do
  command=(waitroom load --url "$WAITROOM_URL" --room "turn-$reads" --capacity "$CAPACITY"
    --users "$USERS" --arrival "$ARRIVAL" --hold-seconds "$HOLD_SECONDS" --seed "$SEED"
    --heartbeat-interval-seconds "$HEARTBEAT_SECONDS" --reads "$reads" --poll-interval-ms 1000
    --request-timeout-ms 15000 --connections-max 256 --no-progress --out "$out/$reads")
  echo "== $reads: ${command[*]} (load average before: $(bench_loadavg))" | tee -a "$summary"
  # The node's held reads (`waitroom_status_reads_held`), sampled every 100 ms: the connections
  # the run held open at once.
  python3 - "$WAITROOM_URL/metrics" "$bench_scratch/$reads.held" <<'PY' &
import sys, time, urllib.request
url, out = sys.argv[1], sys.argv[2]
peak = 0
while True:
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
        for line in text.splitlines():
            if line.startswith("waitroom_status_reads_held "):
                peak = max(peak, int(float(line.split()[1])))
        open(out, "w").write(f"{peak}\n")
    except OSError:
        pass
    time.sleep(0.1)
PY
  sampler=$!
  bench_pids+=("$sampler")
  WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "$BENCH_BIN/${command[0]}" "${command[@]:1}" \
    >"$bench_scratch/$reads.stdout" 2>"$bench_scratch/$reads.stderr" \
    || { cat "$bench_scratch/$reads.stderr" >&2; exit 1; }
  bench_stop "$sampler"
  grep -E '^(users|fifo|refill|turn|overshoot)' "$bench_scratch/$reads.stdout" | tee -a "$summary" || true
  echo "held     at most $(cat "$bench_scratch/$reads.held" 2>/dev/null || echo '?') reads held by the node at once (sampled every 100 ms)" \
    | tee -a "$summary"
  cp "$bench_scratch/$reads.held" "$out/$reads/held-reads-max.txt"
done
python3 - "$out" $READS >>"$summary" <<'PY'
import json, sys
out = sys.argv[1]
rows = []
for reads in sys.argv[2:]:
    m = json.load(open(f"{out}/{reads}/report.json"))["metrics"]
    notice = m["turnNotice"]["upperBoundMs"] or {}
    refill = m["refillLatency"]["upperBoundMs"] or {}
    rows.append((reads, m["turnNotice"]["users"], notice.get("p50"), notice.get("p90"), notice.get("p99"), notice.get("max"),
                 refill.get("p50"), refill.get("p99"), m["readsPerWaitingMinute"],
                 open(f"{out}/{reads}/held-reads-max.txt").read().strip()))
print("\n| reads | users who waited | turn noticed after admission, ms p50 / p90 / p99 / max | refill ms p50 / p99 | status reads per waiting minute | reads held at once, at most |")
print("| --- | --- | --- | --- | --- | --- |")
for reads, users, p50, p90, p99, mx, r50, r99, per, held in rows:
    print(f"| {reads} | {users} | {p50} / {p90} / {p99} / {mx} | {r50} / {r99} | {per:.2f} | {held} |")
PY
cat "$summary"
