#!/usr/bin/env bash
# Joins/s and status polls/s through one waitroom node and through three, all on one Redis
# (Redis Streams backend), and raw redis-benchmark XADD on the same Redis, in one run.
#
#   bench/redis.sh                     # 10 s per run, 64 connections per node
#   DURATION=20s CONNECTIONS=128 bench/redis.sh
#
# Needs redis-server, redis-benchmark (apt-get install redis-server), wrk and python3.
# Everything listens on 127.0.0.1 and is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
SESSIONS="${SESSIONS:-3000}"
for tool in wrk redis-server redis-benchmark python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
source bench/lib.sh
bench_build --bin waitroom
bench_build_servers
scratch="$bench_scratch"

# AOF with appendfsync always: nothing acknowledged is lost (the setting the README recommends).
bench_redis "$scratch/redis" always
redis_port="${REDIS_URL##*:}"

admin="$BENCH_ADMIN_TOKEN"
openssl genpkey -algorithm ed25519 -out "$scratch/key.pem" 2>/dev/null
urls=()
start_node() { # index: starts a node, appends its URL to urls
  local port; port="$(bench_free_port)"
  WAITROOM_LOG=warn "$BENCH_BIN/waitroom" serve --listen "127.0.0.1:$port" --data-dir "$scratch/node$1" \
    --backend "redis://127.0.0.1:$redis_port?node=bench-$1" --signing-key "$scratch/key.pem" \
    --admin-token "$admin" --join-rate-per-ip 0 >"$scratch/node$1.out" 2>&1 &
  bench_pids+=("$!")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
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

echo "on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c$CONNECTIONS -d$DURATION per node"
read -r polls1 bad <<<"$(wrk_rps bench/poll.lua bench3 "${urls[0]}")"; echo "polls, 1 node:   $polls1/s (non-2xx $bad)"
read -r polls3 bad <<<"$(wrk_rps bench/poll.lua bench3 "${urls[@]}")"; echo "polls, 3 nodes:  $polls3/s (non-2xx $bad)"
read -r joins1 bad <<<"$(wrk_rps bench/join.lua bench1 "${urls[0]}")"; echo "joins, 1 node:   $joins1/s (non-2xx $bad)"
read -r joins3 bad <<<"$(wrk_rps bench/join.lua bench3 "${urls[@]}")"; echo "joins, 3 nodes:  $joins3/s (non-2xx $bad)"
xadd1="$(redis-benchmark -p "$redis_port" -c 64 -n 200000 -q XADD benchstream '*' r 0123456789abcdef0123456789abcdef0123456789abcdef | tr '\r' '\n' | awk -F': ' '/requests per second/ {split($2, a, " "); v = a[1]} END {print v}')"
xaddp="$(redis-benchmark -p "$redis_port" -c 64 -n 2000000 -P 100 -q XADD benchstream '*' r 0123456789abcdef0123456789abcdef0123456789abcdef | tr '\r' '\n' | awk -F': ' '/requests per second/ {split($2, a, " "); v = a[1]} END {print v}')"
echo "redis-benchmark XADD, 64 clients:             $xadd1/s"
echo "redis-benchmark XADD, 64 clients, pipeline 100: $xaddp/s"
python3 - "$joins1" "$joins3" "$xadd1" "$xaddp" "$polls1" "$polls3" <<'PY'
import sys
j1, j3, x1, xp, p1, p3 = map(float, sys.argv[1:])
print(f"joins through 1 node / XADD unpipelined = {j1/x1:.2f}; through 3 nodes / XADD unpipelined = {j3/x1:.2f}; 3 nodes / pipelined XADD = {j3/xp:.3f}")
print(f"polls 3 nodes / 1 node = {p3/p1:.2f} (polls never touch Redis; on 2 cores the nodes share the same CPUs)")
PY
