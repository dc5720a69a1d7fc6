#!/usr/bin/env bash
# Room snapshots, measured on the file log and on Redis:
#
#   bench/snapshots.sh start      # 1. time to ready on a long history, with and without snapshots
#   bench/snapshots.sh onsale     # 2. the log's size over a simulated on-sale, trimming on
#   bench/snapshots.sh            # both
#
# 1. start: a room of SESSIONS (1 000 000) waiting sessions that heartbeat, RECORDS (5 000 000)
#    records in all, written with examples/fill_log.rs (keep-history=7d, so every record stays and
#    a node can replay them all). A node applies it all and stores the room's snapshot, then stops;
#    TAIL_RECORDS (90 000, under the 100 000-record snapshot threshold) more heartbeat records
#    follow, so a starting node restores the snapshot and replays that tail. Then, REPEAT times
#    each: a node started fresh (file: after a clean stop; Redis: a new node), the same node
#    killed with SIGKILL and started again, and a node started with --snapshots off (it replays
#    all RECORDS + TAIL_RECORDS). Time to ready = from the process start to /readyz 200. Medians.
# 2. onsale: `waitroom load` drives ONSALE_USERS (40 000) users arriving over three quarters of
#    ONSALE_SECONDS (1 800), capacity 200, holds of 5–20 s, polls every 10 s and heartbeats every
#    10 s, at one node on the file log, then at one of three nodes on one Redis (AOF always; the
#    other two apply the log and tick, as a fleet does). Default snapshot settings, trimming on.
#    Every 10 s: the room's line, the log bytes applied so far (what an untrimmed log would hold),
#    the snapshots stored and trims made; for the file log the segments' and snapshots' bytes on
#    disk, for Redis the stream's length and memory and Redis's used memory. The maxima are the
#    figures; the samples are kept in onsale-<backend>.csv.
#
# Needs redis-server, python3 and curl. Everything listens on 127.0.0.1; every process started
# here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS="${1:-start onsale}"
SESSIONS="${SESSIONS:-1000000}"
RECORDS="${RECORDS:-5000000}"
HEARTBEAT_SESSIONS="${HEARTBEAT_SESSIONS:-10}"
TAIL_RECORDS="${TAIL_RECORDS:-90000}"
REPEAT="${REPEAT:-3}"
ONSALE_SECONDS="${ONSALE_SECONDS:-1800}"
ONSALE_USERS="${ONSALE_USERS:-40000}"
BACKENDS="${BACKENDS:-file redis}"
out="${OUT:-bench/results/$(date -u +%Y-%m-%d)/snapshots}"
mkdir -p "$out"
# Everything printed also goes to the results (no subshell: the exit trap must see every PID).
# RUN_NAME names the file when parts run side by side (e.g. RUN_NAME=onsale-file).
exec > >(tee -a "$out/run${RUN_NAME:+-$RUN_NAME}.txt") 2>&1
source bench/lib.sh
bench_build --bin waitroom --example fill_log
bench_build_servers
scratch="$bench_scratch"
admin="$BENCH_ADMIN_TOKEN"
openssl genpkey -algorithm ed25519 -out "$scratch/key.pem" 2>/dev/null

echo "on $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates bench || echo ' (uncommitted changes)')"

# node_start NAME BACKEND ARGS... : starts a node (not waiting); sets NODE_PID, NODE_PORT, NODE_T0.
node_start() {
  local name="$1" backend="$2"; shift 2
  NODE_PORT="$(bench_free_port)"
  NODE_T0="$(date +%s.%N)"
  WAITROOM_LOG=warn "$BENCH_BIN/waitroom" serve --listen "127.0.0.1:$NODE_PORT" \
    --data-dir "$scratch/$name" --backend "$backend" --signing-key "$scratch/key.pem" \
    --admin-token "$admin" --join-rate-per-ip 0 "$@" >>"$scratch/$name.out" 2>&1 &
  NODE_PID=$!
  bench_pids+=("$NODE_PID")
}

# node_ready_seconds: waits for /readyz 200 of the node just started; prints the seconds since
# its start.
node_ready_seconds() {
  until curl -sf "http://127.0.0.1:$NODE_PORT/readyz" >/dev/null; do
    kill -0 "$NODE_PID" 2>/dev/null || { echo "the node died" >&2; return 1; }
    sleep 0.01
  done
  echo "$(date +%s.%N) - $NODE_T0" | bc
}

# metric NAME: the value of a counter of the node just started.
metric() {
  curl -sf "http://127.0.0.1:$NODE_PORT/metrics" | awk -v name="$1" '$1 == name {print $2}'
}

median() { python3 -c 'import statistics, sys; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }

part_start() { # backend
  local backend="$1" url fresh=() restarted=() off=()
  echo
  echo "== start, $backend: $SESSIONS sessions, $RECORDS records (heartbeats of $HEARTBEAT_SESSIONS sessions), tail of $TAIL_RECORDS"
  case "$backend" in
    file)
      mkdir -p "$scratch/file-node"
      url="file:$scratch/file-node/log?keep-history=7d"
      node_url() { echo "$url"; } ;;
    redis)
      bench_redis "$scratch/redis-start" none
      url="$REDIS_URL?keep-history=7d"
      node_url() { echo "$url&node=$1"; } ;;
  esac
  "$BENCH_BIN/examples/fill_log" --backend "$url" --room big --sessions "$SESSIONS" \
    --records "$RECORDS" --heartbeat-sessions "$HEARTBEAT_SESSIONS"
  # The first node applies it all (no snapshot while catching up), then stores the snapshot.
  node_start file-node "$(node_url first)"
  echo "first start (replays everything, then snapshots): ready in $(node_ready_seconds) s"
  until [ "$(metric waitroom_snapshots_stored_total)" = "1" ]; do sleep 0.1; done
  echo "snapshot stored: $(metric waitroom_snapshot_bytes_sum) bytes, encoded in $(metric waitroom_snapshot_encode_seconds_sum) s, pause $(metric waitroom_snapshot_pause_seconds_sum) s"
  bench_stop "$NODE_PID"
  "$BENCH_BIN/examples/fill_log" --backend "$url" --room big --sessions "$SESSIONS" \
    --records "$TAIL_RECORDS" --heartbeat-sessions "$HEARTBEAT_SESSIONS" --only-heartbeats
  for i in $(seq 1 "$REPEAT"); do
    node_start file-node "$(node_url "fresh-$i")"
    fresh+=("$(node_ready_seconds)")
    [ "$(metric waitroom_rooms_restored_total)" = "1" ] || { echo "the node did not restore the room" >&2; exit 1; }
    kill -9 "$NODE_PID"; wait "$NODE_PID" 2>/dev/null || true
    node_start file-node "$(node_url "fresh-$i")"
    restarted+=("$(node_ready_seconds)")
    bench_stop "$NODE_PID"
    node_start file-node "$(node_url "off-$i")" --snapshots off
    off+=("$(node_ready_seconds)")
    bench_stop "$NODE_PID"
    echo "run $i: fresh ${fresh[-1]} s, restarted after kill -9 ${restarted[-1]} s, --snapshots off ${off[-1]} s"
  done
  local f r o
  f="$(median "${fresh[@]}")"; r="$(median "${restarted[@]}")"; o="$(median "${off[@]}")"
  echo "medians ($backend): fresh $f s, restarted after kill -9 $r s, --snapshots off $o s"
  python3 - "$backend" "$f" "$r" "$o" <<'PY'
import sys
backend, f, r, o = sys.argv[1], *map(float, sys.argv[2:])
print(f"ratio ({backend}): --snapshots off / with snapshots = {o / max(f, r):.1f}x (target >= 5); "
      f"with snapshots <= 2 s: {'yes' if max(f, r) <= 2 else 'NO'}")
PY
  if [ "$backend" = redis ]; then
    bench_server_stop "$REDIS_PID"
  fi
  rm -rf "$scratch/file-node"
}

part_onsale() { # backend
  local backend="$1" node_urls=() pids=() data load_pid
  echo
  echo "== onsale, $backend: $ONSALE_USERS users over $ONSALE_SECONDS s"
  case "$backend" in
    file)
      node_start onsale-file "file:"
      data="$scratch/onsale-file/log"
      node_ready_seconds >/dev/null
      node_urls+=("http://127.0.0.1:$NODE_PORT"); pids+=("$NODE_PID") ;;
    redis)
      bench_redis "$scratch/onsale-redis" always
      for i in 0 1 2; do
        node_start "onsale-redis-$i" "$REDIS_URL?node=onsale-$i"
        node_ready_seconds >/dev/null
        node_urls+=("http://127.0.0.1:$NODE_PORT"); pids+=("$NODE_PID")
      done ;;
  esac
  local url="${node_urls[0]}"
  WAITROOM_ADMIN_TOKEN="$admin" "$BENCH_BIN/waitroom" load --url "$url" --room onsale \
    --capacity 200 --users "$ONSALE_USERS" --arrival "ramp:$((ONSALE_SECONDS * 3 / 4))" \
    --hold-seconds 5..20 --poll-interval-ms 10000 --duration-max-seconds "$ONSALE_SECONDS" \
    --connections-max 512 --no-progress --out "$out/onsale-$backend-load" \
    >"$out/onsale-$backend-load.txt" 2>&1 &
  load_pid=$!
  bench_pids+=("$load_pid")
  local csv="$out/onsale-$backend.csv" started; started="$(date +%s)"
  echo "seconds,waiting,applied_bytes,snapshots,trims,log_bytes,snapshot_bytes,stream_entries,stream_memory_bytes,redis_used_memory_bytes" >"$csv"
  while kill -0 "$load_pid" 2>/dev/null; do
    local waiting applied snaps trims log_bytes=0 snap_bytes=0 xlen=0 xmem=0 used=0 metrics
    metrics="$(curl -sf "$url/metrics" || true)"
    applied="$(awk '$1 == "waitroom_log_applied_bytes_total" {print $2}' <<<"$metrics")"
    snaps="$(for u in "${node_urls[@]}"; do curl -sf "$u/metrics" | awk '$1 == "waitroom_snapshots_stored_total" {print $2}'; done | paste -sd+ | bc)"
    trims="$(for u in "${node_urls[@]}"; do curl -sf "$u/metrics" | awk '$1 == "waitroom_log_trims_total" {print $2}'; done | paste -sd+ | bc)"
    waiting="$(curl -sf -H "Authorization: Bearer $admin" "$url/api/waiting-room/rooms/onsale" | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["waitingCount"])' 2>/dev/null || echo 0)"
    if [ "$backend" = file ]; then
      log_bytes="$(find "$data" -maxdepth 1 -name '*.seg' -printf '%s\n' | paste -sd+ | bc)"
      snap_bytes="$(find "$data/snapshots" -type f -printf '%s\n' | paste -sd+ | bc)"
    else
      local port="${REDIS_URL##*:}"
      xlen="$(redis-cli -p "$port" XLEN 'waitroom:{onsale}:log')"
      xmem="$(redis-cli -p "$port" MEMORY USAGE 'waitroom:{onsale}:log' SAMPLES 0)"
      snap_bytes="$(redis-cli -p "$port" HSTRLEN 'waitroom:{onsale}:snapshot' data)"
      used="$(redis-cli -p "$port" INFO memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')"
    fi
    echo "$(( $(date +%s) - started )),$waiting,${applied:-0},${snaps:-0},${trims:-0},$log_bytes,${snap_bytes:-0},${xlen:-0},${xmem:-0},${used:-0}" >>"$csv"
    sleep 10
  done
  wait "$load_pid" || true
  # How long the load ran, and why it stopped (it must be the duration, not a full trace).
  sed -n 2p "$out/onsale-$backend-load.txt"
  for pid in "${pids[@]}"; do bench_stop "$pid"; done
  [ "$backend" = redis ] && bench_server_stop "$REDIS_PID"
  python3 - "$csv" "$backend" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
backend = sys.argv[2]
last = rows[-1]
seconds = max(int(last["seconds"]), 1)
per_hour = int(last["applied_bytes"]) * 3600 / seconds
mx = lambda key: max(int(float(r[key] or 0)) for r in rows)
print(f"{backend}: {seconds} s, {len(rows)} samples, line up to {mx('waiting')} waiting; "
      f"{last['snapshots']} snapshots, {last['trims']} trims")
print(f"{backend}: log bytes appended: {int(last['applied_bytes'])} = {per_hour / 1e6:.1f} MB per hour untrimmed")
if backend == "file":
    print(f"{backend}: most on disk: segments {mx('log_bytes') / 1e6:.1f} MB, snapshots {mx('snapshot_bytes') / 1e6:.2f} MB")
else:
    print(f"{backend}: most in Redis: stream {mx('stream_entries')} entries / {mx('stream_memory_bytes') / 1e6:.1f} MB, "
          f"snapshot {mx('snapshot_bytes') / 1e6:.2f} MB, Redis used memory {mx('redis_used_memory_bytes') / 1e6:.1f} MB")
PY
}

for part in $PARTS; do
  for backend in $BACKENDS; do
    "part_$part" "$backend"
  done
done
