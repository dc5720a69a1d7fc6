#!/usr/bin/env bash
# Every backend in one run, on one machine, with the same workload, and docs/backends.md written
# from what it measured. For each backend — the embedded file log (with its default fsync policy,
# and with `fsync=always` to match a broker that syncs every write: Redis here), Redis Streams
# (`appendfsync always`), Kafka (tansu), RabbitMQ streams, SQS (moto) — it starts the broker on loopback with the test kit's launcher
# (timing its start), three waitroom nodes on it (one for the embedded log), and measures:
#   - status polls/s and joins/s through one node and through three (wrk, CONNECTIONS per node),
#     with the CPU-seconds the nodes and the broker spent per million joins (from /proc) and the
#     append requests per join (from the node's /metrics);
#   - heartbeats of the sessions joined for the polls, through every node (wrk): heartbeats/s and
#     the append requests per heartbeat;
#   - on SQS, the SQS and S3 requests per join and per heartbeat (the nodes' own counts,
#     waitroom_log_requests_total) and their price at the list prices in bench/lib.sh;
#   - the same `waitroom load` scenario (LOAD_USERS over RAMP_SECONDS into a room of
#     LOAD_CAPACITY, each holding a slot 1 to 3 s): refill latency p50/p99, capacity overshoot and
#     FIFO inversions among the admitted sessions; then, summed over the nodes, the log entries
#     delivered again (skipped by position) and the duplicate records (applied with no effect);
#   - a node killed with SIGKILL after that and started again: seconds until it is ready (it
#     restores the rooms from their snapshots and reads the log after them);
#   - the broker's resident memory at the end, and its own raw write rate (redis-benchmark XADD,
#     librdkafka produce, RabbitMQ confirmed publishes and round trips; none for the embedded log
#     and for moto, whose rate says nothing about AWS).
# Raw outputs go to bench/results/<DATE>/compare/ (one .txt and one .json per backend), then
# bench/compare.py writes docs/backends.md from the JSON files.
#
#   bench/compare.sh                          # all five, 10 s per wrk run, 64 connections
#   BACKENDS="embedded redis" bench/compare.sh
#
# Needs wrk, curl, openssl, python3, redis-server + redis-benchmark, tansu (scripts/install-tansu)
# and rabbitmq-server; moto is installed into a venv under the build dir (once). Everything
# listens on 127.0.0.1 and is stopped by PID. Takes about 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
SESSIONS="${SESSIONS:-3000}"
LOAD_USERS="${LOAD_USERS:-3000}"
LOAD_CAPACITY="${LOAD_CAPACITY:-100}"
RAMP_SECONDS="${RAMP_SECONDS:-20}"
BACKENDS="${BACKENDS:-embedded embedded-always redis kafka rabbitmq sqs}"
OUT="${OUT:-bench/results/$(date -u +%Y-%m-%d)/compare}"
for tool in wrk curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
source bench/lib.sh
bench_build --bin waitroom --features sqs
bench_build_servers
if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --quiet -p waitroom-log --features kafka --example kafka_produce
  cargo build --release --quiet -p waitroom-log --features rabbitmq --example rabbitmq_publish
fi
mkdir -p "$OUT"
CLK_TCK="$(getconf CLK_TCK)"

# tree PID: PID and all its descendants.
tree() {
  local pid="$1" child
  echo "$pid"
  for child in $(pgrep -P "$pid" || true); do tree "$child"; done
}
# cpu_seconds PID...: user + system CPU seconds of the processes and their descendants.
cpu_seconds() {
  local pid ticks=0 t
  for pid in "$@"; do
    for t in $(tree "$pid"); do
      [ -r "/proc/$t/stat" ] || continue
      ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$t/stat" 2>/dev/null || echo 0)))
    done
  done
  python3 -c "print($ticks / $CLK_TCK)"
}
# rss_mib PID...: resident memory of the processes and their descendants, in MiB.
rss_mib() {
  local pid kib=0 t
  for pid in "$@"; do
    for t in $(tree "$pid"); do
      kib=$((kib + $(awk '/^VmRSS:/ {print $2}' "/proc/$t/status" 2>/dev/null || echo 0)))
    done
  done
  python3 -c "print(round($kib / 1024, 1))"
}
# appends URL: the append requests the node at URL made so far.
appends() {
  curl -sf "$1/metrics" | awk '/^waitroom_log_append_duration_seconds_count/ {print $2}'
}
millis() { date +%s%3N; }

# start_broker BACKEND: starts the broker (none for the embedded log); sets BROKER_PIDS,
# NODE_BACKEND (a function of the node's index), BROKER_START_MS and BROKER_VERSION.
start_broker() {
  local started URL PID EPMD_PID
  started="$(millis)"
  BROKER_PIDS=()
  case "$1" in
    embedded)
      BROKER_VERSION="file log, fsync=interval (the default)"
      ;;
    embedded-always)
      BROKER_VERSION="file log, fsync=always"
      ;;
    redis)
      # AOF with appendfsync always: nothing acknowledged is lost (the README's recommendation).
      eval "$("$BENCH_BIN/waitroom-servers" redis --dir "$bench_scratch/redis" --persistence always)"
      BROKER_PIDS=("$PID"); bench_server_pids+=("$PID"); BROKER_URL="$URL"
      BROKER_VERSION="redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), appendfsync always"
      ;;
    kafka)
      eval "$("$BENCH_BIN/waitroom-servers" kafka --dir "$bench_scratch/tansu" --storage sqlite)"
      BROKER_PIDS=("$PID"); bench_server_pids+=("$PID"); BROKER_URL="$URL"
      BROKER_VERSION="tansu $(tansu --version | awk '{print $2}'), SQLite storage"
      ;;
    rabbitmq)
      eval "$("$BENCH_BIN/waitroom-servers" rabbitmq --dir "$bench_scratch/rabbitmq")"
      BROKER_PIDS=("$PID"); bench_server_pids+=("$PID" "$EPMD_PID"); BROKER_URL="$URL"
      BROKER_VERSION="RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo '?'), streams"
      ;;
    sqs)
      local venv="${WAITROOM_MOTO_VENV:-$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/moto-venv}"
      eval "$("$BENCH_BIN/waitroom-servers" moto --dir "$bench_scratch/moto" --venv "$venv")"
      BROKER_PIDS=("$PID"); bench_server_pids+=("$PID"); BROKER_URL="$URL"
      BROKER_VERSION="moto $("$venv/bin/python" -c 'import moto; print(moto.__version__)') (SQS and S3 in one process)"
      ;;
  esac
  BROKER_START_MS=$(( $(millis) - started ))
}
# node_backend BACKEND INDEX: the node's --backend.
node_backend() {
  case "$1" in
    embedded) echo "file:" ;;
    embedded-always) echo "file:?fsync=always" ;;
    redis) echo "$BROKER_URL?node=compare-$2" ;;
    kafka|sqs) echo "$BROKER_URL&node=compare-$2" ;;
    rabbitmq) echo "$BROKER_URL?prefix=compare" ;;
  esac
}
# raw_rate BACKEND: the broker's own write rate, as "rate|what" (empty when there is none).
raw_rate() {
  local brokers
  case "$1" in
    redis)
      echo "$(redis-benchmark -p "${BROKER_URL##*:}" -c "$CONNECTIONS" -n 200000 -q XADD rawstream '*' r 0123456789abcdef0123456789abcdef0123456789abcdef \
        | tr '\r' '\n' | awk -F': ' '/requests per second/ {split($2, a, " "); v = a[1]} END {print v}')|redis-benchmark XADD, $CONNECTIONS clients, unpipelined"
      ;;
    kafka)
      brokers="${BROKER_URL#kafka://}"; brokers="${brokers%%\?*}"
      echo "$("$BENCH_BIN/examples/kafka_produce" --brokers "$brokers" --topic compare-raw --seconds "${DURATION%s}" \
        --outstanding "$CONNECTIONS" | awk '/^records\/s/ {print $2}')|produce, acks=all, one record per request, $CONNECTIONS in flight"
      ;;
    rabbitmq)
      echo "$("$BENCH_BIN/examples/rabbitmq_publish" --url "$BROKER_URL" --stream compare-raw --seconds "${DURATION%s}" \
        --outstanding "$CONNECTIONS" | awk '/^messages\/s/ {print $2}')|confirmed publishes, one message each, $CONNECTIONS in flight"
      ;;
  esac
}

# measure BACKEND: the whole run for one backend; writes $OUT/BACKEND.txt and .json.
measure() {
  local backend="$1" nodes=3 i
  case "$backend" in embedded*) nodes=1 ;; esac
  bench_urls=()
  start_broker "$backend"
  for i in $(seq 0 $((nodes - 1))); do bench_start_node "node$i" "$(node_backend "$backend" "$i")"; done
  local node_pids=("${bench_pids[@]}")
  bench_room bench1 100; bench_room bench3 100
  bench_join_sessions bench3 "$SESSIONS" "$bench_scratch/ids" "${bench_urls[@]}"
  echo "$backend: $BROKER_VERSION; $nodes node(s) on $(nproc) cores, load average $(bench_loadavg); wrk -t1 -c$CONNECTIONS -d$DURATION per node"
  echo "broker start (launcher until ready): $BROKER_START_MS ms"
  local polls1 polls3 joins1 joins3 bad n1 cpu0 cpu1 bcpu0 bcpu1 a0 a1
  read -r polls1 _ bad <<<"$(bench_wrk bench/poll.lua bench3 "${bench_urls[0]}")"; echo "polls, 1 node:   $polls1/s (non-2xx $bad)"
  polls3=""
  if [ "$nodes" = 3 ]; then
    read -r polls3 _ bad <<<"$(bench_wrk bench/poll.lua bench3 "${bench_urls[@]}")"; echo "polls, 3 nodes:  $polls3/s (non-2xx $bad)"
  fi
  cpu0="$(cpu_seconds "${node_pids[@]}")"; bcpu0=0
  [ "${#BROKER_PIDS[@]}" -gt 0 ] && bcpu0="$(cpu_seconds "${BROKER_PIDS[@]}")"
  a0="$(appends "${bench_urls[0]}")"
  local bill0 bill1
  bill0="$(bench_billed "${bench_urls[@]}")"
  read -r joins1 n1 bad <<<"$(bench_wrk bench/join.lua bench1 "${bench_urls[0]}")"; echo "joins, 1 node:   $joins1/s (non-2xx $bad)"
  a1="$(appends "${bench_urls[0]}")"
  bill1="$(bench_billed "${bench_urls[@]}")"
  cpu1="$(cpu_seconds "${node_pids[@]}")"; bcpu1=0
  [ "${#BROKER_PIDS[@]}" -gt 0 ] && bcpu1="$(cpu_seconds "${BROKER_PIDS[@]}")"
  echo "during the 1-node joins: nodes $(python3 -c "print(round($cpu1 - $cpu0, 2))") CPU-s, broker $(python3 -c "print(round($bcpu1 - $bcpu0, 2))") CPU-s, $n1 joins, $(python3 -c "print($a1 - $a0)") append requests"
  joins3=""
  if [ "$nodes" = 3 ]; then
    read -r joins3 _ bad <<<"$(bench_wrk bench/join.lua bench3 "${bench_urls[@]}")"; echo "joins, 3 nodes:  $joins3/s (non-2xx $bad)"
  fi
  # Heartbeats of the sessions joined above, through every node: what a heartbeat costs the log
  # (the nodes batch them per room).
  local beats beats_n ha0 ha1 hbill0 hbill1
  ha0="$(bench_counter waitroom_log_append_duration_seconds_count "${bench_urls[@]}")"
  hbill0="$(bench_billed "${bench_urls[@]}")"
  read -r beats beats_n bad <<<"$(bench_wrk bench/heartbeat.lua bench3 "${bench_urls[@]}")"
  ha1="$(bench_counter waitroom_log_append_duration_seconds_count "${bench_urls[@]}")"
  hbill1="$(bench_billed "${bench_urls[@]}")"
  echo "heartbeats, $nodes node(s): $beats/s (non-2xx $bad), $beats_n heartbeats, $((ha1 - ha0)) append requests"
  if [ "$backend" = sqs ]; then
    echo "billed requests (sqs s3_put_list s3_get) during the 1-node joins: $bill0 -> $bill1; during the heartbeats: $hbill0 -> $hbill1"
  fi
  local raw="" raw_what=""
  IFS='|' read -r raw raw_what <<<"$(raw_rate "$backend")"
  [ -n "$raw" ] && echo "raw broker writes ($raw_what): $raw/s"
  # RabbitMQ: also what a join needs of the broker, published, confirmed and delivered to the
  # first of three subscribers (see bench/rabbitmq.sh).
  local round_trip=""
  if [ "$backend" = rabbitmq ]; then
    round_trip="$("$BENCH_BIN/examples/rabbitmq_publish" --url "$BROKER_URL" --stream compare-round-trip \
      --seconds "${DURATION%s}" --outstanding "$CONNECTIONS" --subscribers 3 | awk '/^messages\/s/ {print $2}')"
    echo "raw round trips (published, confirmed, delivered to the first of 3 subscribers), $CONNECTIONS in flight: $round_trip/s"
  fi

  local load_url="${bench_urls[$((nodes - 1))]}"
  WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "$BENCH_BIN/waitroom" load --url "$load_url" --room refill \
    --capacity "$LOAD_CAPACITY" --users "$LOAD_USERS" --arrival "ramp:$RAMP_SECONDS" --hold-seconds 1..3 \
    --poll-interval-ms 1000 --duration-max-seconds $((RAMP_SECONDS * 4 + 60)) --connections-max 256 \
    --no-progress --out "$bench_scratch/load-$backend" >"$bench_scratch/load-$backend.txt" 2>&1 \
    || { cat "$bench_scratch/load-$backend.txt" >&2; echo "waitroom load failed on $backend" >&2; }
  cp "$bench_scratch/load-$backend/report.json" "$OUT/$backend-load.json" 2>/dev/null || true
  # What at-least-once delivery repeated on every node over the whole run so far.
  local redelivered duplicates
  redelivered="$(bench_counter waitroom_log_entries_redelivered_total "${bench_urls[@]}")"
  duplicates="$(bench_counter waitroom_records_duplicate_total "${bench_urls[@]}")"
  echo "on all nodes, over the run: $redelivered log entries delivered again (skipped), $duplicates duplicate records (no effect)"

  # Replay: the last node killed with SIGKILL, then started again on its data dir; ready within
  # RESTART_WAIT_S or reported as not ready (SQS: a batch the killed node held waits out the
  # visibility timeout).
  local victim=$((nodes - 1)) restart_ms=None started port
  kill -9 "${node_pids[$victim]}"; wait "${node_pids[$victim]}" 2>/dev/null || true
  port="$(bench_free_port)"
  started="$(millis)"
  WAITROOM_LOG=warn "$BENCH_BIN/waitroom" serve --listen "127.0.0.1:$port" \
    --data-dir "$bench_scratch/node$victim" --backend "$(node_backend "$backend" "$victim")" \
    --signing-key "$bench_scratch/key.pem" --admin-token "$BENCH_ADMIN_TOKEN" --join-rate-per-ip 0 \
    >"$bench_scratch/node$victim.restart.out" 2>&1 &
  bench_pids+=("$!")
  for _ in $(seq 1 $(( ${RESTART_WAIT_S:-120} * 10 ))); do
    if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then restart_ms=$(( $(millis) - started )); break; fi
    sleep 0.1
  done
  echo "node killed with SIGKILL and started again: ready in ${restart_ms} ms (None: not within ${RESTART_WAIT_S:-120} s)"
  local broker_rss=""
  [ "${#BROKER_PIDS[@]}" -gt 0 ] && broker_rss="$(rss_mib "${BROKER_PIDS[@]}")" && echo "broker resident memory: $broker_rss MiB"

  python3 - "$OUT/$backend.json" <<PY
import json, sys
load = {}
try:
    load = json.load(open("$OUT/$backend-load.json"))["metrics"]
except Exception:
    pass
num = lambda v: float(v) if v not in ("", None) else None
joins = int("$n1" or 0)
refill = load.get("refillLatency", {})
fifo = load.get("fifo") or {}
beats_n = int("$beats_n" or 0)
def billed(before, after, ops):
    b, a = map(int, before.split()), map(int, after.split())
    per = [(y - x) / ops for x, y in zip(b, a)] if ops else None
    if not per:
        return None
    return {"sqs": per[0], "s3PutList": per[1], "s3Get": per[2],
            "dollarsPerMillion": per[0] * $BENCH_SQS_PER_MILLION + per[1] * $BENCH_S3_PUT_LIST_PER_MILLION
                                 + per[2] * $BENCH_S3_GET_PER_MILLION}
json.dump({
    "backend": "$backend", "broker": "$BROKER_VERSION", "nodes": $nodes,
    "machine": "$(bench_machine)", "loadAverageAtStart": "$(bench_loadavg)",
    "loadUsers": $LOAD_USERS, "rampSeconds": $RAMP_SECONDS, "loadCapacity": $LOAD_CAPACITY,
    "wrk": "-t1 -c$CONNECTIONS -d$DURATION per node",
    "brokerStartMs": $BROKER_START_MS,
    "polls1": num("$polls1"), "polls3": num("$polls3"),
    "joins1": num("$joins1"), "joins3": num("$joins3"),
    "nodeCpuSecondsPerMillionJoins": ($cpu1 - $cpu0) / joins * 1e6 if joins else None,
    "brokerCpuSecondsPerMillionJoins": ($bcpu1 - $bcpu0) / joins * 1e6 if joins else None,
    "appendRequestsPerJoin": ($a1 - $a0) / joins if joins else None,
    "heartbeats": num("$beats"), "heartbeatsDone": beats_n,
    "appendRequestsPerHeartbeat": ($ha1 - $ha0) / beats_n if beats_n else None,
    "billedPerJoin": billed("$bill0", "$bill1", joins) if "$backend" == "sqs" else None,
    "billedPerHeartbeat": billed("$hbill0", "$hbill1", beats_n) if "$backend" == "sqs" else None,
    "prices": "SQS FIFO \$$BENCH_SQS_PER_MILLION per million requests, S3 PUT/LIST \$$BENCH_S3_PUT_LIST_PER_MILLION per million, GET \$$BENCH_S3_GET_PER_MILLION per million ($BENCH_PRICES_DATED)",
    "redelivered": int("$redelivered" or 0), "duplicates": int("$duplicates" or 0),
    "fifoInversions": fifo.get("inversions"), "fifoSessions": fifo.get("sessions"),
    "raw": num("$raw"), "rawWhat": "$raw_what", "rawRoundTrip": num("$round_trip"),
    "refillP50Ms": (refill.get("upperBoundMs") or {}).get("p50"),
    "refillP99Ms": (refill.get("upperBoundMs") or {}).get("p99"),
    "refilled": refill.get("refilled"), "freed": refill.get("freedWhileWaiting"),
    "overshoot": ((load.get("overshoot") or {}).get("client") or {}).get("overshoot"),
    "restartReadyMs": $restart_ms,
    "brokerRssMib": num("$broker_rss"),
}, open(sys.argv[1], "w"), indent=2)
PY
  # Stop this backend's nodes and broker before the next one.
  local pid
  for pid in "${bench_pids[@]}"; do bench_stop "$pid"; done
  if [ "${#bench_server_pids[@]}" -gt 0 ]; then
    "$BENCH_BIN/waitroom-servers" stop "${bench_server_pids[@]}" || true
  fi
  bench_server_pids=()
}

commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo '+changes')"
echo "$commit" >"$OUT/commit"
for backend in $BACKENDS; do
  echo "== $backend"
  # Not through a pipe: `measure` must run in this shell, so that the exit trap stops what it
  # started if it fails.
  measure "$backend" > >(tee "$OUT/$backend.txt") 2>&1
done
python3 bench/compare.py "$OUT" docs/backends.md
echo "wrote docs/backends.md from $OUT"
