#!/usr/bin/env bash
# Joins/s and status polls/s through one waitroom node and through three, all on one RabbitMQ
# node (RabbitMQ streams backend, stream protocol); refill latency from `waitroom load` on the
# three nodes; and the raw confirmed-publish rate of the same broker (one message per publish and
# per confirm, as many in flight as wrk keeps connections) and its raw round-trip rate (each
# message also delivered to a subscriber before the next), in one run.
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

for i in 0 1 2; do bench_start_node "node$i" "$rabbitmq_url?prefix=bench"; done

bench_room bench1 100; bench_room bench3 100
bench_join_sessions bench3 "$SESSIONS" "$scratch/ids" "${bench_urls[@]}"

echo "RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?') on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c$CONNECTIONS -d$DURATION per node"
read -r polls1 _ bad <<<"$(bench_wrk bench/poll.lua bench3 "${bench_urls[0]}")"; echo "polls, 1 node:   $polls1/s (non-2xx $bad)"
read -r polls3 _ bad <<<"$(bench_wrk bench/poll.lua bench3 "${bench_urls[@]}")"; echo "polls, 3 nodes:  $polls3/s (non-2xx $bad)"
read -r joins1 _ bad <<<"$(bench_wrk bench/join.lua bench1 "${bench_urls[0]}")"; echo "joins, 1 node:   $joins1/s (non-2xx $bad)"
read -r joins3 _ bad <<<"$(bench_wrk bench/join.lua bench3 "${bench_urls[@]}")"; echo "joins, 3 nodes:  $joins3/s (non-2xx $bad)"
publish="$("$BENCH_BIN/examples/rabbitmq_publish" --url "$rabbitmq_url" --stream bench-raw \
  --seconds "${DURATION%s}" --outstanding "$CONNECTIONS" | awk '/^messages\/s/ {print $2}')"
echo "raw confirmed publishes, one message per confirm, $CONNECTIONS in flight: $publish/s"
# What a join needs of the broker: published, confirmed and read back by its node (here by the
# first of three subscribers, as with three nodes).
round_trip="$("$BENCH_BIN/examples/rabbitmq_publish" --url "$rabbitmq_url" --stream bench-round-trip \
  --seconds "${DURATION%s}" --outstanding "$CONNECTIONS" --subscribers 3 | awk '/^messages\/s/ {print $2}')"
echo "raw round trips (published, confirmed, delivered to the first of 3 subscribers), one message each, $CONNECTIONS in flight: $round_trip/s"

WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "$BENCH_BIN/waitroom" load --url "${bench_urls[1]}" --room refill \
  --capacity "$LOAD_CAPACITY" --users "$LOAD_USERS" --arrival "ramp:$RAMP_SECONDS" --hold-seconds 1..3 \
  --poll-interval-ms 1000 --duration-max-seconds $((RAMP_SECONDS * 4 + 60)) --connections-max 256 \
  --no-progress --out "$scratch/load" >"$scratch/load.txt" 2>&1 || { cat "$scratch/load.txt" >&2; exit 1; }
python3 - "$joins1" "$joins3" "$publish" "$polls1" "$polls3" "$round_trip" "$scratch/load/report.json" <<'PY'
import json, sys
j1, j3, raw, p1, p3, trip = map(float, sys.argv[1:7])
refill = json.load(open(sys.argv[7]))["metrics"]["refillLatency"]
up, low = refill["upperBoundMs"] or {}, refill["lowerBoundMs"] or {}
print(f"refill latency (waitroom load, 3 nodes): {refill['refilled']} of {refill['freedWhileWaiting']} freed slots refilled; "
      f"upper bound p50 {up.get('p50', 0):.1f} / p99 {up.get('p99', 0):.1f} / max {up.get('max', 0):.1f} ms, "
      f"lower bound p50 {low.get('p50', 0):.1f} / p99 {low.get('p99', 0):.1f} ms")
print(f"joins through 1 node / raw confirmed publishes = {j1/raw:.2f} (target >= 0.5); through 3 nodes / raw = {j3/raw:.2f}")
print(f"joins through 1 node / raw round trips = {j1/trip:.2f}; round trips / confirmed publishes = {trip/raw:.2f}")
print(f"polls 3 nodes / 1 node = {p3/p1:.2f} (polls never touch the broker; on 2 cores the nodes share the same CPUs)")
PY
