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

for i in 0 1 2; do bench_start_node "node$i" "redis://127.0.0.1:$redis_port?node=bench-$i"; done

bench_room bench1 100; bench_room bench3 100
bench_join_sessions bench3 "$SESSIONS" "$scratch/ids" "${bench_urls[@]}"

echo "on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); wrk -t1 -c$CONNECTIONS -d$DURATION per node"
read -r polls1 _ bad <<<"$(bench_wrk bench/poll.lua bench3 "${bench_urls[0]}")"; echo "polls, 1 node:   $polls1/s (non-2xx $bad)"
read -r polls3 _ bad <<<"$(bench_wrk bench/poll.lua bench3 "${bench_urls[@]}")"; echo "polls, 3 nodes:  $polls3/s (non-2xx $bad)"
read -r joins1 _ bad <<<"$(bench_wrk bench/join.lua bench1 "${bench_urls[0]}")"; echo "joins, 1 node:   $joins1/s (non-2xx $bad)"
read -r joins3 _ bad <<<"$(bench_wrk bench/join.lua bench3 "${bench_urls[@]}")"; echo "joins, 3 nodes:  $joins3/s (non-2xx $bad)"
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
