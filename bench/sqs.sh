#!/usr/bin/env bash
# The SQS backend (with S3) against moto_server: joins/s and refill latency through one node and
# through three, and the SQS and S3 requests per join and per heartbeat (what a user pays for),
# turned into dollars per million joins.
#
#   bench/sqs.sh                        # 10 s per run, 16 connections per node
#   DURATION=30s CONNECTIONS=32 bench/sqs.sh
#
# Needs wrk and python3 (moto[server] is installed into a venv under the build dir, once).
# Everything listens on 127.0.0.1 and is stopped by PID on exit.
#
# moto is a single Python process: joins/s here say what moto serves, not what AWS would (AWS
# answers each request in milliseconds and scales out). The requests are counted by the nodes
# themselves (each prints its counts when it stops) and do not depend on moto, but for the
# receives that come back empty: against moto the nodes short-poll the intake (receive-wait=0s,
# see the sqs module's docs), so those are left out, and the long polls of an idle node on AWS
# are priced separately.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-16}"
SESSIONS="${SESSIONS:-500}"
REFILLS="${REFILLS:-20}"
for tool in wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
source bench/lib.sh
bench_build --bin waitroom --features sqs
bench_build_servers
scratch="$bench_scratch"

# List prices: bench/lib.sh.
SQS_PER_MILLION="$BENCH_SQS_PER_MILLION"
S3_PUT_LIST_PER_MILLION="$BENCH_S3_PUT_LIST_PER_MILLION"
S3_GET_PER_MILLION="$BENCH_S3_GET_PER_MILLION"

venv="${WAITROOM_MOTO_VENV:-$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/moto-venv}"
eval "$("$BENCH_BIN/waitroom-servers" moto --dir "$scratch/moto" --venv "$venv")"
bench_server_pids+=("$PID")
backend="$URL"

# start_node INDEX: a node of the fleet on the backend (its request counts in its output).
start_node() {
  WAITROOM_LOG=warn,waitroom_log::sqs=info bench_start_node "node$1" "$backend&node=bench-$1"
}

# stop_nodes: waits for every node's next report of the requests its log made (one a minute),
# stops the nodes (SIGTERM: each says its final count as it stops and deletes its queue, so the
# next run copies into no dead node's queue) and forgets their URLs; then waits out the
# visibility timeout (30 s), so that a batch a node held as it stopped is free again before the
# next nodes start.
stop_nodes() {
  local pid
  sleep 62
  for pid in "${bench_pids[@]}"; do bench_stop "$pid"; done
  bench_urls=()
  sleep 31
}

# requests FILE...: the requests the nodes whose output is in FILE... made (each node's last
# report), summed by kind, as "sqs s3_put_list s3_get s3_delete empty_receives" (empty receives
# are not in sqs).
requests() {
  python3 - "$@" <<'PY'
import re, sys
total = {}
for path in sys.argv[1:]:
    last = {}
    for line in open(path, errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "requests this log made" in line:
            last = dict(re.findall(r"(\w+)=(\d+)", line.split("requests=", 1)[1]))
    for kind, count in last.items():
        total[kind] = total.get(kind, 0) + int(count)
sqs = sum(v for k, v in total.items() if k.startswith("sqs_") and k != "sqs_receive_empty")
print(sqs, total.get("s3_put", 0) + total.get("s3_list", 0), total.get("s3_get", 0),
      total.get("s3_delete", 0), total.get("sqs_receive_empty", 0))
PY
}

# report NAME RATE OPS BAD SQS PUTLIST GET DELETE: requests per operation and their price.
report() {
  python3 - "$@" "$SQS_PER_MILLION" "$S3_PUT_LIST_PER_MILLION" "$S3_GET_PER_MILLION" <<'PY'
import sys
name, rate, ops, bad = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sqs, putlist, get, delete = map(float, sys.argv[5:9])
sqs_price, put_price, get_price = map(float, sys.argv[9:12])
per = [n / max(ops, 1) for n in (sqs, putlist, get, delete)]
dollars = per[0] * sqs_price + per[1] * put_price + per[2] * get_price
print(f"{name}: {rate:.0f}/s ({ops} done, non-2xx {bad}); per operation: SQS {per[0]:.2f}, "
      f"S3 put+list {per[1]:.3f}, S3 get {per[2]:.3f}, S3 delete {per[3]:.3f} "
      f"=> ${dollars:.2f} per million")
PY
}

# refill NODES: capacity 1; a session leaves through the first node and the time until the next
# one is ACTIVE, seen from the last node, is measured REFILLS times (p50, p90, max in ms).
refill() {
  local room="refill$1"; bench_room "$room" 1
  python3 - "$room" "$REFILLS" "${bench_urls[0]}" "${bench_urls[$(( $1 - 1 ))]}" <<'PY'
import json, sys, time, urllib.request
room, n, first, last = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def call(method, url):
    req = urllib.request.Request(url, method=method, data=json.dumps({"roomId": room}).encode() if method == "POST" else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r) if r.status != 204 else None
def join():
    return call("POST", f"{first}/api/waiting-room/sessions")["waitingRoomSessionId"]
active = join()
times = []
for _ in range(n):
    nxt = join()
    time.sleep(0.2)
    started = time.monotonic()
    urllib.request.urlopen(urllib.request.Request(f"{first}/api/waiting-room/sessions/{active}", method="DELETE"))
    while True:
        try:
            view = call("GET", f"{last}/api/waiting-room/sessions/{nxt}")
        except Exception:
            view = {}
        if view.get("status") == "ACTIVE":
            break
        time.sleep(0.002)
    times.append((time.monotonic() - started) * 1000)
    active = nxt
times.sort()
print(f"refill latency ({'same node' if first == last else 'left through one node, seen on another'}): "
      f"p50 {times[len(times) // 2]:.0f} ms, p90 {times[int(len(times) * 0.9)]:.0f} ms, max {times[-1]:.0f} ms")
PY
}

echo "on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c$CONNECTIONS -d$DURATION per node; moto $("$venv/bin/python" -c 'import moto; print(moto.__version__)')"
echo "prices: SQS FIFO \$$SQS_PER_MILLION/M requests, S3 PUT/LIST \$$S3_PUT_LIST_PER_MILLION/M, GET \$$S3_GET_PER_MILLION/M ($BENCH_PRICES_DATED)"
# One node: joins; stopped, its requests counted. Each count covers a node's whole life (start,
# a head sync a minute, tagging its queue), which a longer DURATION spreads over more joins.
start_node 0
bench_room bench1 100000
read -r rate ops bad <<<"$(bench_wrk bench/join.lua bench1 "${bench_urls[0]}")"
stop_nodes
read -r sqs putlist get delete empty <<<"$(requests "$scratch/node0.out")"
report "joins, 1 node" "$rate" "$ops" "$bad" "$sqs" "$putlist" "$get" "$delete"

# Three nodes: joins; stopped, their requests counted.
start_node 1; start_node 2; start_node 3
bench_room bench3 100000
read -r rate ops bad <<<"$(bench_wrk bench/join.lua bench3 "${bench_urls[@]}")"
stop_nodes
read -r sqs putlist get delete empty <<<"$(requests "$scratch"/node{1,2,3}.out)"
report "joins, 3 nodes" "$rate" "$ops" "$bad" "$sqs" "$putlist" "$get" "$delete"

# Three fresh nodes: SESSIONS joins, then heartbeats of those sessions; the joins are taken off at
# the three-node price per join just measured (their batching differs a little from wrk's).
start_node 4; start_node 5; start_node 6
bench_room beats 100000
bench_join_sessions beats "$SESSIONS" "$scratch/ids" "${bench_urls[@]}"
read -r hb_rate hb_ops hb_bad <<<"$(bench_wrk bench/heartbeat.lua beats "${bench_urls[@]}")"
stop_nodes
read -r b_sqs b_putlist b_get b_delete b_empty <<<"$(requests "$scratch"/node{4,5,6}.out)"
read -r h_sqs h_putlist h_get h_delete <<<"$(python3 - "$b_sqs" "$b_putlist" "$b_get" "$b_delete" "$sqs" "$putlist" "$get" "$delete" "$ops" "$SESSIONS" <<'PY'
import sys
beats = list(map(float, sys.argv[1:5])); joins = list(map(float, sys.argv[5:9]))
join_ops, sessions = float(sys.argv[9]), float(sys.argv[10])
print(*(max(0.0, b - j / max(join_ops, 1) * sessions) for b, j in zip(beats, joins)))
PY
)"
report "heartbeats, 3 nodes" "$hb_rate" "$hb_ops" "$hb_bad" "$h_sqs" "$h_putlist" "$h_get" "$h_delete"

# The refill latency: through one node, then through three (not counted).
start_node 7
refill 1
start_node 8; start_node 9
refill 3
echo "an idle node on AWS long-polls the intake and its queue (20 s): 6 SQS requests a minute, \$$(python3 -c "print(f'{6 * 60 * 24 * 30 * $SQS_PER_MILLION / 1e6:.2f}')") a month, plus its head sync (a marker per group) every minute"
