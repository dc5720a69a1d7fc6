#!/usr/bin/env bash
# Floods against one node (issue 15): do legitimate users keep their latency while one client
# floods the node, and what does the flood cost the backend? One node on Redis (the test kit's
# launcher, no persistence), trusting `X-Forwarded-For` for the client address (as behind a
# proxy) with the default per-address join limit (50 joins/s, burst 500). Three runs of the same
# `waitroom load` crowd (USERS users arriving over RAMP seconds, each from an address of its own
# through `--forwarded-for`, polling every 2 s and heartbeating every 10 s while they wait, for
# RUN_SECONDS), in the same run of this script:
#
#   baseline   nothing else;
#   joins      FLOOD joins (POST /api/waiting-room/sessions) from one address (203.0.113.7),
#              starting FLOOD_AFTER seconds into the crowd's run, as fast as CONNECTIONS
#              keep-alive connections go;
#   unknown    FLOOD reads (GET /api/waiting-room/sessions/{id}) of random unknown session ids
#              that carry the room's own tag (so each names a known room and an unknown session:
#              the case that waits for the node to catch up with its log), the same way.
#
# Prints, per run: the crowd's poll and join p50 / p99 and failures, the flood's answers by
# status and its rate, the Redis commands executed during the run (INFO commandstats, before and
# after) and the node's head reads of the log (waitroom_log_head_reads_total).
#
# The flooder stands for a client on another machine: on a machine of two cores or more it runs on
# a core of its own (the last), and everything else (Redis, the node, the crowd) on the others, so
# that what the flood costs legitimate users is the node's work for it, not the flooder's own CPU
# (PIN=0: no pinning, as in bench/results/2026-12-06/flood).
#
#   bench/flood.sh                                    # 100 000 per flood, 5 000 users, 60 s runs
#   FLOOD=20000 USERS=1000 RUN_SECONDS=30 bench/flood.sh
#   OUT=dir bench/flood.sh                            # also keep the load tool's reports in dir
#
# Needs python3 (the flooder: asyncio, raw HTTP/1.1, no dependencies) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
FLOOD="${FLOOD:-100000}"
CONNECTIONS="${CONNECTIONS:-32}"
USERS="${USERS:-5000}"
RAMP="${RAMP:-10}"
RUN_SECONDS="${RUN_SECONDS:-60}"
FLOOD_AFTER="${FLOOD_AFTER:-12}"
CAPACITY="${CAPACITY:-50}"
SEED="${SEED:-1}"
out="${OUT:-$bench_scratch/flood}"
mkdir -p "$out"
flood_pin=()
pinning="none (PIN=0 or one core)"
if [ "${PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  last_cpu=$(( $(nproc) - 1 ))
  # This shell and everything it starts from here on inherit the first cores.
  taskset -pc "0-$(( last_cpu - 1 ))" $$ >/dev/null
  flood_pin=(taskset -c "$last_cpu")
  pinning="the flooder on CPU $last_cpu; Redis, the node and the crowd on CPUs 0-$(( last_cpu - 1 ))"
fi

bench_build --bin waitroom
bench_build_servers
bench_redis "$bench_scratch/redis" none
# Not bench_start_node: that one turns the per-address join limit off, which is the defence here.
port="$(bench_free_port)"
openssl genpkey -algorithm ed25519 -out "$bench_scratch/key.pem" 2>/dev/null
WAITROOM_LOG="${WAITROOM_LOG:-warn}" "$BENCH_BIN/waitroom" serve --listen "127.0.0.1:$port" \
  --data-dir "$bench_scratch/node" --backend "$REDIS_URL" --signing-key "$bench_scratch/key.pem" \
  --admin-token "$BENCH_ADMIN_TOKEN" --client-ip-header X-Forwarded-For \
  --connections-per-address-max 0 >"$bench_scratch/node.out" 2>&1 &
bench_pids+=("$!")
url="http://127.0.0.1:$port"
for _ in $(seq 1 300); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "$url/readyz" >/dev/null || { cat "$bench_scratch/node.out" >&2; exit 1; }
redis_port="${REDIS_URL##*:}"
redis_port="${redis_port%%/*}"

echo "# bench/flood.sh: $FLOOD-request floods against one node on Redis, $USERS users polling"
echo "# $(bench_version)"
echo "# on $(bench_machine)"
echo "# node: waitroom serve --backend redis (no persistence) --client-ip-header X-Forwarded-For"
echo "#   --connections-per-address-max 0 (every connection comes from 127.0.0.1 here); the per-address"
echo "#   join limit at its defaults (50 joins/s, burst 500) and the head reads at theirs"
echo "# crowd: waitroom load --users $USERS --arrival ramp:$RAMP --forwarded-for X-Forwarded-For"
echo "#   --capacity $CAPACITY --hold-seconds 5..30 --poll-interval-ms 2000"
echo "#   --heartbeat-interval-seconds 10 --duration-max-seconds $RUN_SECONDS --seed $SEED"
echo "# flood: $FLOOD requests over $CONNECTIONS keep-alive connections, from X-Forwarded-For"
echo "#   203.0.113.7, starting $FLOOD_AFTER s into the crowd's run"
echo "# pinning: $pinning"
echo "# load average at start: $(bench_loadavg)"
echo "# busiest processes at start (top, over one second: %CPU, command):"
top -b -n 2 -d 1 -o %CPU | awk '/^top -/ {n++} n == 2 && /^ *[0-9]/ {print $9, $12}' | head -n 8 | sed 's/^/#   /'
bench_sample_loadavg "$bench_scratch/loadavg"

# flooder KIND ROOM RESULT_FILE: sends FLOOD requests of KIND (joins | unknown) and writes
# {"statuses": {...}, "seconds": ...} to RESULT_FILE.
flooder() {
  "${flood_pin[@]}" python3 - "$url" "$1" "$2" "$FLOOD" "$CONNECTIONS" "$3" <<'PY' &
import asyncio, base64, json, os, sys, time, urllib.request
url, kind, room, total, connections, result_path = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
host, port = url.removeprefix("http://").split(":")
port = int(port)
forwarded = "203.0.113.7"

tag = b""
if kind == "unknown":
    # The room's tag: the first 4 bytes of any of its session ids (one join, from another address).
    request = urllib.request.Request(f"{url}/api/waiting-room/sessions", method="POST",
        data=json.dumps({"roomId": room}).encode(),
        headers={"Content-Type": "application/json", "X-Forwarded-For": "198.51.100.1"})
    with urllib.request.urlopen(request) as response:
        known = json.load(response)["waitingRoomSessionId"]
    tag = base64.urlsafe_b64decode(known[3:] + "=")[:4]

def request_bytes():
    if kind == "joins":
        body = json.dumps({"roomId": room}).encode()
        return (f"POST /api/waiting-room/sessions HTTP/1.1\r\nHost: {host}\r\n"
                f"X-Forwarded-For: {forwarded}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    session = "wr_" + base64.urlsafe_b64encode(tag + os.urandom(16)).decode().rstrip("=")
    return (f"GET /api/waiting-room/sessions/{session} HTTP/1.1\r\nHost: {host}\r\n"
            f"X-Forwarded-For: {forwarded}\r\n\r\n").encode()

statuses = {}
left = total

async def worker():
    global left
    reader = writer = None
    while left > 0:
        left -= 1
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request_bytes())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status = "transport error"
            if writer is not None:
                writer.close()
            writer = None
        statuses[status] = statuses.get(status, 0) + 1

async def main():
    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    with open(result_path, "w") as result:
        json.dump({"statuses": statuses, "seconds": time.monotonic() - start}, result)

asyncio.run(main())
PY
  FLOODER_PID=$!
  bench_pids+=("$FLOODER_PID")
}

redis_calls() {
  "$(command -v redis-cli)" -p "$redis_port" info commandstats \
    | awk -F'[:=,]' '/^cmdstat_/ {sum += $3} END {print sum + 0}'
}

head_reads() {
  curl -sf "$url/metrics" | awk '/^waitroom_log_head_reads_total / {print $2}'
}

run_crowd() { # NAME [FLOOD_KIND]
  local name="$1" kind="${2:-}"
  date +%s.%N >"$bench_scratch/$name.start"
  echo "$(redis_calls) $(head_reads)" >"$bench_scratch/$name.backend-start"
  WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "$BENCH_BIN/waitroom" load --url "$url" --room "$name" \
    --users "$USERS" --arrival "ramp:$RAMP" --forwarded-for X-Forwarded-For --capacity "$CAPACITY" \
    --hold-seconds 5..30 --poll-interval-ms 2000 --heartbeat-interval-seconds 10 \
    --waiting-idle-timeout-seconds 120 --duration-max-seconds "$RUN_SECONDS" --seed "$SEED" \
    --no-gate --no-progress --out "$out/$name" >"$bench_scratch/$name.load.out" 2>&1 &
  local load_pid=$!
  if [ -n "$kind" ]; then
    sleep "$FLOOD_AFTER"
    date +%s.%N >"$bench_scratch/$name.flood-start"
    flooder "$kind" "$name" "$bench_scratch/$name.flood.json"
    wait "$FLOODER_PID" || { echo "the flooder failed ($name)" >&2; exit 1; }
    date +%s.%N >"$bench_scratch/$name.flood-end"
  fi
  wait "$load_pid" || { cat "$bench_scratch/$name.load.out" >&2; echo "waitroom load failed ($name)" >&2; exit 1; }
  date +%s.%N >"$bench_scratch/$name.end"
  echo "$(redis_calls) $(head_reads)" >"$bench_scratch/$name.backend-end"
  # The next run starts from a node without this crowd.
  curl -sf -X DELETE "$url/api/waiting-room/rooms/$name" -H "Authorization: Bearer $BENCH_ADMIN_TOKEN" >/dev/null || true
  echo "# $name done; load average $(bench_loadavg)"
}

run_crowd baseline
sleep 2
run_crowd joins joins
sleep 2
run_crowd unknown unknown
bench_stop "$LOADAVG_PID"

python3 - "$out" "$bench_scratch" <<'PY'
import json, pathlib, sys
out, scratch = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
loads = [l.split() for l in open(scratch / "loadavg") if l.strip()]
print()
print(f"{'run':<9} {'polls':>7} {'poll p50':>9} {'poll p99':>9} {'failed':>7} {'joins':>6} {'join p50':>9} "
      f"{'join p99':>9} {'failed':>7} {'redis cmds':>11} {'head reads':>11} {'load avg':>9}")
p99 = {}
for name in ["baseline", "joins", "unknown"]:
    start, end = (float(open(scratch / f"{name}.{w}").read()) for w in ("start", "end"))
    m = json.load(open(out / name / "report.json"))["metrics"]
    poll, join = m["requests"].get("poll", {}), m["requests"].get("join", {})
    lp, lj = poll.get("latencyMs") or {}, join.get("latencyMs") or {}
    b0, b1 = (open(scratch / f"{name}.backend-{w}").read().split() for w in ("start", "end"))
    redis = int(b1[0]) - int(b0[0])
    heads = float(b1[1]) - float(b0[1])
    load = [float(l[1]) for l in loads if start <= float(l[0]) <= end]
    load = f"{sum(load) / len(load):.2f}" if load else "-"
    p99[name] = lp.get("p99")
    print(f"{name:<9} {poll.get('count', 0):>7} {lp.get('p50', 0):>7.2f}ms {lp.get('p99', 0):>7.2f}ms "
          f"{poll.get('failed', 0):>7} {join.get('count', 0):>6} {lj.get('p50', 0):>7.2f}ms {lj.get('p99', 0):>7.2f}ms "
          f"{join.get('failed', 0):>7} {redis:>11} {heads:>11.0f} {load:>9}")
    if m["failures"]["total"]:
        print(f"{'':<9} failures: {json.dumps(m['failures']['byKind'])}")
print()
for name in ["joins", "unknown"]:
    flood = json.load(open(scratch / f"{name}.flood.json"))
    seconds = flood["seconds"]
    sent = sum(flood["statuses"].values())
    answers = ", ".join(f"{status}: {count}" for status, count in sorted(flood["statuses"].items()))
    print(f"flood {name}: {sent} requests in {seconds:.1f} s ({sent / seconds:.0f}/s); answers {answers}")
for name in ["joins", "unknown"]:
    if p99.get("baseline") and p99.get(name) is not None:
        print(f"poll p99 {name} / baseline: {p99[name] / p99['baseline']:.2f}")
print("(redis cmds: commands Redis executed during the run, INFO commandstats; head reads: the node's reads of "
      "the log's head for catch-up waits, at most one per --head-read interval; load avg: 1-minute, mean of the 5 s "
      "samples during the run)")
PY
echo "# load average at the end: $(bench_loadavg)"
