#!/usr/bin/env bash
# Idle connections against one node (issue 15): do the polls of legitimate users keep being
# answered while IDLE connections sit open on the same node? One fresh embedded node (release
# build, default connection limits), then three runs of the same `waitroom load` crowd (USERS
# users arriving over RAMP seconds, polling every 2 s and heartbeating every 10 s while they wait,
# for RUN_SECONDS), in the same run of this script:
#
#   baseline   nothing else connected;
#   silent     IDLE connections that send nothing: the node closes each after the header timeout
#              (10 s), and the holder opens a new one at once, so IDLE stay open throughout (and
#              about IDLE / 10 connections are opened and closed per second);
#   keepalive  IDLE connections that each send one request, read the answer and stay idle: the node
#              keeps them until the idle timeout (75 s, longer than the run).
#
# The idle connections come from SOURCES loopback addresses (127.0.0.2, 127.0.0.3, ...), IDLE /
# SOURCES each, under the default cap per address (1024); the crowd comes from 127.0.0.1. Prints,
# per run, the idle connections held (min and mean over the crowd's run), the polls' and joins'
# p50 / p99 and failures, and the node's connection counters; the load average is sampled every
# 5 s and what else was using the CPU is listed at the start.
#
#   bench/idle-connections.sh                       # 10 000 idle, 5 000 users, 40 s per run
#   IDLE=2000 USERS=1000 RUN_SECONDS=15 bench/idle-connections.sh
#   OUT=dir bench/idle-connections.sh               # also keep the load tool's reports in dir
#   CARGO_FLAGS=--no-default-features bench/idle-connections.sh   # a quicker build
#
# Needs python3 and a Linux loopback (every 127.0.0.0/8 address is local). Raises the open-files
# limit to its hard limit (lib.sh): the node and the holder each need IDLE of them plus a few.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
IDLE="${IDLE:-10000}"
SOURCES="${SOURCES:-20}"
USERS="${USERS:-5000}"
RAMP="${RAMP:-10}"
RUN_SECONDS="${RUN_SECONDS:-40}"
CAPACITY="${CAPACITY:-50}"
SEED="${SEED:-1}"
out="${OUT:-$bench_scratch/idle-connections}"
mkdir -p "$out"
[ "$(ulimit -n)" -ge $((IDLE + 1024)) ] || {
  echo "the open-files limit ($(ulimit -n)) is below IDLE + 1024; raise it (ulimit -Hn)" >&2
  exit 1
}

# CARGO_FLAGS: more flags of the build, e.g. --no-default-features (the embedded file log is all
# this needs; the brokers' clients take minutes to build).
# shellcheck disable=SC2086
bench_build --bin waitroom ${CARGO_FLAGS:-}
bench_start_node idle file:
NODE_PID="${bench_pids[-1]}"
HOLDER_PID=""
url="${bench_urls[0]}"
port="${url##*:}"

echo "# bench/idle-connections.sh: $IDLE idle connections against one node, $USERS users polling"
echo "# $(bench_version); cargo build --release -p waitroom --bin waitroom ${CARGO_FLAGS:-}"
echo "# on $(bench_machine)"
echo "# node: waitroom serve --backend file: --join-rate-per-ip 0, default connection limits"
echo "#   (--connections-max 50000, --connections-per-address-max 1024,"
echo "#    --header-read-timeout-ms 10000, --idle-timeout-ms 75000)"
echo "# idle connections: from $SOURCES addresses 127.0.0.2.. ($((IDLE / SOURCES)) each, under the"
echo "#   per-address cap); the crowd: from 127.0.0.1"
echo "# crowd: waitroom load --users $USERS --arrival ramp:$RAMP --capacity $CAPACITY --hold-seconds 5..30"
echo "#   --poll-interval-ms 2000 --heartbeat-interval-seconds 10 --duration-max-seconds $RUN_SECONDS --seed $SEED"
echo "# open-files limit: $(ulimit -n); load average at start: $(bench_loadavg)"
echo "# busiest processes at start (top, over one second: %CPU, command):"
top -b -n 2 -d 1 -o %CPU | awk '/^top -/ {n++} n == 2 && /^ *[0-9]/ {print $9, $12}' | head -n 8 | sed 's/^/#   /'
bench_sample_loadavg "$bench_scratch/loadavg"

# The holder: keeps IDLE connections open to the node (see the header), one line per second
# "<unix s> <open> <opened> <closed by the node> <failed connects>" into its status file.
holder() { # MODE STATUS_FILE
  python3 - "127.0.0.1" "$port" "$IDLE" "$SOURCES" "$1" "$2" <<'PY' &
import asyncio, signal, sys, time
host, port, n, sources, mode, status_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
state = {"open": 0, "opened": 0, "closed": 0, "failed": 0}
stop = asyncio.Event()

async def hold(i):
    source = f"127.0.0.{2 + i % sources}"
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError:
            state["failed"] += 1
            await asyncio.sleep(0.5)
            continue
        state["opened"] += 1
        state["open"] += 1
        try:
            if mode == "keepalive":
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: idle\r\n\r\n")
                await writer.drain()
                await reader.readuntil(b"\r\n\r\n")
            while await reader.read(4096):
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        state["open"] -= 1
        state["closed"] += 1
        writer.close()

async def report():
    with open(status_path, "a", buffering=1) as status:
        while not stop.is_set():
            status.write(f"{time.time():.1f} {state['open']} {state['opened']} {state['closed']} {state['failed']}\n")
            await asyncio.sleep(1)

async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reporter = asyncio.create_task(report())
    tasks = []
    for i in range(n):  # opened at 1000 a second, so the node's closes spread out too
        tasks.append(asyncio.create_task(hold(i)))
        if i % 100 == 99:
            await asyncio.sleep(0.1)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, reporter, return_exceptions=True)

asyncio.run(main())
PY
  HOLDER_PID=$!
  bench_pids+=("$HOLDER_PID")
}

# wait_held STATUS_FILE: until the holder holds at least 98 % of IDLE (≤ 120 s).
wait_held() {
  local open=0
  for _ in $(seq 1 240); do
    open="$(tail -n 1 "$1" 2>/dev/null | cut -d' ' -f2 || true)"
    [ "${open:-0}" -ge $((IDLE * 98 / 100)) ] && return 0
    sleep 0.5
  done
  echo "the holder holds only ${open:-0} of $IDLE connections" >&2
  return 1
}

# cpu_ticks PID: the CPU time (user + system, in clock ticks) PID has used so far; 0 without one.
cpu_ticks() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

connection_counters() {
  curl -sf "$url/metrics" | grep -E '^waitroom_connections_' | tr '\n' ' '
}

run_crowd() { # NAME
  local name="$1"
  date +%s.%N >"$bench_scratch/$name.start"
  echo "$(cpu_ticks "$NODE_PID") $(cpu_ticks "$HOLDER_PID")" >"$bench_scratch/$name.cpu-start"
  WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "$BENCH_BIN/waitroom" load --url "$url" --room "$name" \
    --users "$USERS" --arrival "ramp:$RAMP" --capacity "$CAPACITY" --hold-seconds 5..30 \
    --poll-interval-ms 2000 --heartbeat-interval-seconds 10 --waiting-idle-timeout-seconds 120 \
    --duration-max-seconds "$RUN_SECONDS" --seed "$SEED" --no-gate --no-progress \
    --out "$out/$name" >"$bench_scratch/$name.load.out" 2>&1 \
    || { cat "$bench_scratch/$name.load.out" >&2; echo "waitroom load failed ($name)" >&2; exit 1; }
  date +%s.%N >"$bench_scratch/$name.end"
  echo "$(cpu_ticks "$NODE_PID") $(cpu_ticks "$HOLDER_PID")" >"$bench_scratch/$name.cpu-end"
  echo "$(connection_counters)" >"$bench_scratch/$name.counters"
  # The next run starts from a node without this crowd.
  curl -sf -X DELETE "$url/api/waiting-room/rooms/$name" -H "Authorization: Bearer $BENCH_ADMIN_TOKEN" >/dev/null || true
  echo "# $name done; load average $(bench_loadavg)"
}

run_crowd baseline
for mode in silent keepalive; do
  holder "$mode" "$bench_scratch/$mode.held"
  wait_held "$bench_scratch/$mode.held"
  sleep 2
  run_crowd "$mode"
  bench_stop "$HOLDER_PID"
  HOLDER_PID=""
  sleep 2
done
bench_stop "$LOADAVG_PID"

python3 - "$out" "$bench_scratch" "$IDLE" "$(getconf CLK_TCK)" <<'PY'
import json, pathlib, sys
out, scratch, idle, tick = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
loads = [l.split() for l in open(scratch / "loadavg") if l.strip()]
print()
print(f"{'run':<10} {'idle held min/mean':>19} {'opened/closed':>15} {'polls':>7} {'poll p50':>9} {'poll p99':>9} "
      f"{'failed':>7} {'joins':>6} {'join p50':>9} {'join p99':>9} {'failed':>7} {'load avg':>9} {'node cpu':>9} {'holder cpu':>11}")
rows = {}
for name in ["baseline", "silent", "keepalive"]:
    start, end = (float(open(scratch / f"{name}.{w}").read()) for w in ("start", "end"))
    held = "-"
    churn = "-"
    path = scratch / f"{name}.held"
    if path.exists():
        samples = [list(map(float, l.split())) for l in open(path) if l.strip()]
        during = [s for s in samples if start <= s[0] <= end]
        if during:
            opens = [s[1] for s in during]
            held = f"{min(opens):.0f} / {sum(opens) / len(opens):.0f}"
            churn = f"{during[-1][2] - during[0][2]:.0f}/{during[-1][3] - during[0][3]:.0f}"
    m = json.load(open(out / name / "report.json"))["metrics"]
    poll = m["requests"].get("poll", {})
    join = m["requests"].get("join", {})
    lp, lj = poll.get("latencyMs") or {}, join.get("latencyMs") or {}
    load = [float(l[1]) for l in loads if start <= float(l[0]) <= end]
    load = f"{sum(load) / len(load):.2f}" if load else "-"
    cpu0, cpu1 = ([int(x) for x in open(scratch / f"{name}.cpu-{w}").read().split()] for w in ("start", "end"))
    node_cpu = f"{100 * (cpu1[0] - cpu0[0]) / tick / (end - start):.0f}%"
    holder_cpu = f"{100 * (cpu1[1] - cpu0[1]) / tick / (end - start):.0f}%" if path.exists() else "-"
    rows[name] = lp.get("p99")
    print(f"{name:<10} {held:>19} {churn:>15} {poll.get('count', 0):>7} {lp.get('p50', 0):>7.2f}ms {lp.get('p99', 0):>7.2f}ms "
          f"{poll.get('failed', 0):>7} {join.get('count', 0):>6} {lj.get('p50', 0):>7.2f}ms {lj.get('p99', 0):>7.2f}ms "
          f"{join.get('failed', 0):>7} {load:>9} {node_cpu:>9} {holder_cpu:>11}")
    failures = m["failures"]
    if failures["total"]:
        print(f"{'':<10} failures: {json.dumps(failures['byKind'])}")
print()
for name in ["baseline", "silent", "keepalive"]:
    print(f"{name} — node's counters after the run: {open(scratch / f'{name}.counters').read().strip()}")
base = rows.get("baseline")
if base:
    for name in ["silent", "keepalive"]:
        if rows.get(name) is not None:
            print(f"poll p99 {name} / baseline: {rows[name] / base:.2f}")
print("(held: the holder's open connections sampled each second during the crowd's run; opened/closed: "
      "connections it opened and the node closed meanwhile; load avg: 1-minute, mean of the 5 s samples during the run; "
      "node cpu, holder cpu: their CPU time during the run, in % of one core; the counters are cumulative)")
PY
echo "# load average at the end: $(bench_loadavg)"
