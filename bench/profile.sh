#!/usr/bin/env bash
# Where a join's time goes, on this machine. For each backend (the embedded file log with its
# default fsync policy and with fsync=always, Redis Streams with `appendfsync always`, RabbitMQ
# streams), one node on it and `wrk` posting joins (CONNECTIONS connections, DURATION), measured
# twice in one run:
#   - the machine's CPU over the run, split by process from /proc: the node, the broker, wrk, the
#     rest, and idle (what is left on the cores);
#   - a sampled profile of the node alone (`perf record -F 999 -p NODE`, user and kernel), as the
#     symbols it spent its samples in (`perf report --no-children --sort dso,symbol`);
#   - on Redis, the broker's own time by command over the run (`INFO commandstats`, reset just
#     before), per join: which commands a join costs Redis (including those it propagates to
#     its AOF).
# Raw outputs go to bench/results/<DATE>/profile/<backend>.txt.
#
#   bench/profile.sh
#   BACKENDS="redis" DURATION=20s bench/profile.sh
#
# Needs perf (Debian: linux-perf), wrk, curl, openssl, python3, and the brokers of the backends
# profiled (redis-server, rabbitmq-server). Run it as root or with kernel.perf_event_paranoid
# at most 1. Everything listens on 127.0.0.1 and is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
BACKENDS="${BACKENDS:-embedded embedded-always redis rabbitmq}"
OUT="${OUT:-bench/results/$(date -u +%Y-%m-%d)/profile}"
for tool in perf wrk curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
source bench/lib.sh
bench_build --bin waitroom --features sqs
bench_build_servers
mkdir -p "$OUT"
CLK_TCK="$(getconf CLK_TCK)"

# ticks PID...: user + system clock ticks of the processes and their descendants.
ticks() {
  local pid t sum=0
  for pid in "$@"; do
    for t in $pid $(pgrep -P "$pid" || true); do
      [ -r "/proc/$t/stat" ] || continue
      sum=$((sum + $(awk '{print $14 + $15}' "/proc/$t/stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$sum"
}
# machine_ticks: "busy idle" clock ticks of every core so far (/proc/stat).
machine_ticks() {
  awk '/^cpu / {busy = $2 + $3 + $4 + $7 + $8 + $9; idle = $5 + $6; print busy, idle}' /proc/stat
}

profile() {
  local backend="$1" URL PID EPMD_PID node_backend broker_pids=()
  case "$backend" in
    embedded) node_backend="file:" ;;
    embedded-always) node_backend="file:?fsync=always" ;;
    redis)
      eval "$("$BENCH_BIN/waitroom-servers" redis --dir "$bench_scratch/redis" --persistence always)"
      bench_server_pids+=("$PID"); broker_pids=("$PID"); node_backend="$URL?node=profile"
      ;;
    rabbitmq)
      eval "$("$BENCH_BIN/waitroom-servers" rabbitmq --dir "$bench_scratch/rabbitmq")"
      bench_server_pids+=("$PID" "$EPMD_PID"); broker_pids=("$PID"); node_backend="$URL?prefix=profile"
      ;;
  esac
  bench_urls=()
  bench_start_node "node-$backend" "$node_backend"
  local node_pid="${bench_pids[-1]}" url="${bench_urls[0]}"
  bench_room profile 100
  echo "$backend: one node on $(nproc) cores, load average $(bench_loadavg); wrk -t1 -c$CONNECTIONS -d$DURATION joins; $(bench_version)"
  local m0 m1 n0 n1 b0=0 b1=0 joins
  local redis_port=""
  if [ "$backend" = redis ]; then
    redis_port="${node_backend##*:}"; redis_port="${redis_port%%\?*}"
    redis-cli -p "$redis_port" CONFIG RESETSTAT >/dev/null
  fi
  m0="$(machine_ticks)"; n0="$(ticks "$node_pid")"
  [ "${#broker_pids[@]}" -gt 0 ] && b0="$(ticks "${broker_pids[@]}")"
  IDS_FILE=/dev/null ROOM=profile wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s bench/join.lua "$url" \
    >"$bench_scratch/wrk.out" &
  local wrk_pid=$!
  perf record -q -F 999 -p "$node_pid" -o "$bench_scratch/perf.data" -- sleep "$(( ${DURATION%s} - 1 ))" \
    2>"$bench_scratch/perf.err" || { cat "$bench_scratch/perf.err" >&2; exit 1; }
  wait "$wrk_pid"
  m1="$(machine_ticks)"; n1="$(ticks "$node_pid")"
  [ "${#broker_pids[@]}" -gt 0 ] && b1="$(ticks "${broker_pids[@]}")"
  joins="$(awk '/Requests\/sec/ {print $2}' "$bench_scratch/wrk.out")"
  echo "joins: $joins/s"
  python3 - "$m0" "$m1" "$n0" "$n1" "$b0" "$b1" "$joins" "${DURATION%s}" "$CLK_TCK" <<'PY'
import sys
m0, m1 = [list(map(int, a.split())) for a in sys.argv[1:3]]
node, broker = int(sys.argv[4]) - int(sys.argv[3]), int(sys.argv[6]) - int(sys.argv[5])
joins, seconds, hz = float(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9])
busy, idle = m1[0] - m0[0], m1[1] - m0[1]
total = busy + idle
rest = busy - node - broker
print(f"machine CPU over the run ({total / hz:.1f} core-seconds): node {node / total:.0%}, broker {broker / total:.0%}, "
      f"wrk and everything else {rest / total:.0%}, idle {idle / total:.0%}")
n = joins * seconds
print(f"per join: node {node / hz / n * 1e6:.1f} µs, broker {broker / hz / n * 1e6:.1f} µs, "
      f"wrk and everything else {rest / hz / n * 1e6:.1f} µs of CPU")
PY
  echo
  perf report -q -i "$bench_scratch/perf.data" --no-children --sort dso,sym --percent-limit 0 --stdio -g none \
    2>/dev/null >"$bench_scratch/perf.txt"
  python3 - "$bench_scratch/perf.txt" <<'PY'
import re, sys
# What a sample's symbol belongs to (first match wins).
CATEGORIES = [
    ("kernel: scheduling, futexes, wake-ups", r"\[k\] .*(finish_task_switch|schedule|futex|wake|_raw_spin_unlock|irqentry|try_to_wake|ttwu|switch_|__x64_sys_futex|enqueue|dequeue|pick_next)"),
    ("kernel: TCP/IP (loopback)", r"\[k\] .*(tcp|skb|inet|net_|ip_|__dev|sock|loopback|napi|softirq|_copy_to_iter|_copy_from_iter|copy_user)"),
    ("kernel: files and fsync", r"\[k\] .*(ext4|jbd2|vfs_|file|fsync|blk|bio|page_cache|filemap|writeback)"),
    ("kernel: other (syscalls, epoll, memory)", r"\[k\] "),
    ("memory allocator (mimalloc)", r"\bmi_|_mi_|mimalloc"),
    ("copies (memmove, memcpy)", r"mem(move|cpy|set|cmp)"),
    ("HTTP (hyper, axum, http)", r"hyper|axum|\bhttp[:_]|tower|httparse|h1::"),
    ("JSON (serde_json)", r"serde_json|serde::"),
    ("Redis client (redis, combine)", r"redis::|combine::"),
    ("RabbitMQ client (the log's stream protocol)", r"rabbitmq"),
    ("the log (waitroom_log)", r"waitroom_log"),
    ("the state machine (waitroom_core)", r"waitroom_core"),
    ("the node (waitroom)", r"waitroom::"),
    ("tokio (runtime, timers, I/O driver)", r"tokio|mio::|parking_lot"),
    ("time (clock_gettime)", r"clock_gettime|vdso"),
    ("everything else", r""),
]
totals = {name: 0.0 for name, _ in CATEGORIES}
top = {name: [] for name, _ in CATEGORIES}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+(\[.\])\s+(.*?)\s*(-\s+-)?\s*$", line)
    if not m:
        continue
    share, dso, kind, sym = float(m[1]), m[2], m[3], m[4]
    text = f"{kind} {sym} {dso}"
    for name, pattern in CATEGORIES:
        if re.search(pattern, text):
            totals[name] += share
            top[name].append((share, sym))
            break
print("the node's samples (perf record -F 999 -p NODE), by what the symbol belongs to:")
for name, share in sorted(totals.items(), key=lambda kv: -kv[1]):
    if share < 0.05:
        continue
    heads = ", ".join(f"{sym[:60]} {s:.1f}%" for s, sym in sorted(top[name], reverse=True)[:3])
    print(f"  {share:5.1f}%  {name}  (top: {heads})")
PY
  echo
  echo "the node's 30 busiest symbols (perf report --no-children --sort dso,sym):"
  sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+/ /g; 30q' "$bench_scratch/perf.txt"
  if [ -n "$redis_port" ]; then
    echo
    echo "Redis's time by command over the run (INFO commandstats, reset before wrk; per join = over $joins/s × ${DURATION%s} s):"
    redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' | python3 -c '
import re, sys
joins = float(sys.argv[1]) * float(sys.argv[2])
rows = []
for line in sys.stdin:
    m = re.match(r"cmdstat_(\S+):calls=(\d+),usec=(\d+),usec_per_call=([0-9.]+)", line)
    if m:
        rows.append((int(m[3]), m[1], int(m[2]), float(m[4])))
total = sum(row[0] for row in rows) or 1
for usec, name, calls, per_call in sorted(rows, reverse=True):
    print(f"  {name:<12} {calls:>9} calls  {usec / 1e6:6.2f} s  {usec / total:5.1%}  {per_call:8.2f} µs/call  "
          f"{calls / joins:6.3f} calls/join  {usec / joins:6.2f} µs/join")
print(f"  all commands: {total / joins:.2f} µs of Redis time per join (command execution only: not the "
      f"network, the event loop, nor the AOF write and fsync)")
' "$joins" "${DURATION%s}"
  fi
  local pid
  for pid in "${bench_pids[@]}"; do bench_stop "$pid"; done
  if [ "${#bench_server_pids[@]}" -gt 0 ]; then
    "$BENCH_BIN/waitroom-servers" stop "${bench_server_pids[@]}" || true
  fi
  bench_server_pids=()
}

for backend in $BACKENDS; do
  echo "== $backend"
  profile "$backend" > >(tee "$OUT/$backend.txt") 2>&1
done
