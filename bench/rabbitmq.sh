#!/usr/bin/env bash
# Joins/s and status polls/s through one waitroom node and through three, all on one RabbitMQ
# node (RabbitMQ streams backend, stream protocol); refill latency from `waitroom load` on the
# three nodes; and the raw confirmed-publish rate of the same broker (one message per publish and
# per confirm, as many in flight as wrk keeps connections), in one run.
#
#   bench/rabbitmq.sh                                # 10 s per run, 64 connections per node
#   DURATION=20s CONNECTIONS=128 bench/rabbitmq.sh
#
# Needs rabbitmq-server (apt-get install rabbitmq-server), wrk, curl, openssl and python3.
# Everything listens on 127.0.0.1 and is stopped by PID on exit (the broker and its epmd).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
SESSIONS="${SESSIONS:-3000}"
# `waitroom load`: users arriving over RAMP_SECONDS into a room of LOAD_CAPACITY, holding their
# slot 1 to 3 s, so slots are freed and refilled all along.
LOAD_USERS="${LOAD_USERS:-3000}"
LOAD_CAPACITY="${LOAD_CAPACITY:-100}"
RAMP_SECONDS="${RAMP_SECONDS:-20}"
for tool in wrk python3 curl openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null \
  || { echo "rabbitmq-server is needed (apt-get install rabbitmq-server)" >&2; exit 1; }
source bench/lib.sh
bench_build --bin waitroom
bench_build_servers
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p waitroom-log --features rabbitmq --example rabbitmq_publish
scratch="$bench_scratch"

eval "$("$BENCH_BIN/waitroom-servers" rabbitmq --dir "$scratch/rabbitmq")"
bench_server_pids+=("$PID" "$EPMD_PID")
rabbitmq_url="$URL"

admin="$BENCH_ADMIN_TOKEN"
openssl genpkey -algorithm ed25519 -out "$scratch/key.pem" 2>/dev/null
urls=()
start_node() { # index: starts a node, appends its URL to urls
  local port; port="$(bench_free_port)"
  WAITROOM_LOG=warn "$BENCH_BIN/waitroom" serve --listen "127.0.0.1:$port" --data-dir "$scratch/node$1" \
    --backend "$rabbitmq_url?prefix=bench" --signing-key "$scratch/key.pem" \
    --admin-token "$admin" --join-rate-per-ip 0 >"$scratch/node$1.out" 2>&1 &
  bench_pids+=("$!")
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$scratch/node$1.out" >&2; exit 1; }
  urls+=("http://127.0.0.1:$port")
}
start_node 0; start_node 1; start_node 2

room() { # name -> create a room where everyone waits and nobody expires during the runs
  curl -sf -X PUT "${urls[0]}/api/waiting-room/rooms/$1" -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
    -d '{"capacity":100,"waitingIdleTimeoutSeconds":3600,"activeIdleTimeoutSeconds":3600,"maxActiveSeconds":7200}' >/dev/null
}
room bench1; room bench3
bench_join_sessions bench3 "$SESSIONS" "$scratch/ids" "${urls[@]}"

wrk_rps() { # script room url... -> "total requests/s, non-2xx" over the urls, run in parallel
  local script="$1" room="$2"; shift 2
  local i=0 files=() runs=()
  for url in "$@"; do
    IDS_FILE="$scratch/ids" ROOM="$room" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$script" "$url" >"$scratch/wrk.$i" &
    runs+=("$!"); files+=("$scratch/wrk.$i"); i=$((i + 1))
  done
  wait "${runs[@]}"
  awk '/Requests\/sec/ {sum += $2} /Non-2xx/ {bad += $NF} END {printf "%.0f %d\n", sum, bad}' "${files[@]}"
}

echo "RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?') on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c$CONNECTIONS -d$DURATION per node"
read -r polls1 bad <<<"$(wrk_rps bench/poll.lua bench3 "${urls[0]}")"; echo "polls, 1 node:   $polls1/s (non-2xx $bad)"
read -r polls3 bad <<<"$(wrk_rps bench/poll.lua bench3 "${urls[@]}")"; echo "polls, 3 nodes:  $polls3/s (non-2xx $bad)"
read -r joins1 bad <<<"$(wrk_rps bench/join.lua bench1 "${urls[0]}")"; echo "joins, 1 node:   $joins1/s (non-2xx $bad)"
read -r joins3 bad <<<"$(wrk_rps bench/join.lua bench3 "${urls[@]}")"; echo "joins, 3 nodes:  $joins3/s (non-2xx $bad)"
publish="$("$BENCH_BIN/examples/rabbitmq_publish" --url "$rabbitmq_url" --stream bench-raw \
  --seconds "${DURATION%s}" --outstanding "$CONNECTIONS" | awk '/^messages\/s/ {print $2}')"
echo "raw confirmed publishes, one message per confirm, $CONNECTIONS in flight: $publish/s"

WAITROOM_ADMIN_TOKEN="$admin" "$BENCH_BIN/waitroom" load --url "${urls[1]}" --room refill \
  --capacity "$LOAD_CAPACITY" --users "$LOAD_USERS" --arrival "ramp:$RAMP_SECONDS" --hold-seconds 1..3 \
  --poll-interval-ms 1000 --duration-max-seconds $((RAMP_SECONDS * 4 + 60)) --connections-max 256 \
  --no-progress --out "$scratch/load" >"$scratch/load.txt" 2>&1 || { cat "$scratch/load.txt" >&2; exit 1; }
python3 - "$joins1" "$joins3" "$publish" "$polls1" "$polls3" "$scratch/load/report.json" <<'PY'
import json, sys
j1, j3, raw, p1, p3 = map(float, sys.argv[1:6])
refill = json.load(open(sys.argv[6]))["metrics"]["refillLatency"]
up, low = refill["upperBoundMs"] or {}, refill["lowerBoundMs"] or {}
print(f"refill latency (waitroom load, 3 nodes): {refill['refilled']} of {refill['freedWhileWaiting']} freed slots refilled; "
      f"upper bound p50 {up.get('p50', 0):.1f} / p99 {up.get('p99', 0):.1f} / max {up.get('max', 0):.1f} ms, "
      f"lower bound p50 {low.get('p50', 0):.1f} / p99 {low.get('p99', 0):.1f} ms")
print(f"joins through 1 node / raw confirmed publishes = {j1/raw:.2f} (target >= 0.5); through 3 nodes / raw = {j3/raw:.2f}")
print(f"polls 3 nodes / 1 node = {p3/p1:.2f} (polls never touch the broker; on 2 cores the nodes share the same CPUs)")
PY
