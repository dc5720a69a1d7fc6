#!/usr/bin/env bash
# Status polls/s and joins/s against one embedded waitroom node, and against a bare axum handler
# with the same routes and response sizes (the physical limit of the HTTP stack here), measured
# with the same wrk settings in the same run. Prints the figures and the ratios.
#
#   bench/http.sh                      # defaults: 10 s per run, 64 connections, 1 wrk thread
#   DURATION=30s CONNECTIONS=128 bench/http.sh
#
# Needs wrk (apt-get install wrk) and python3. Everything listens on 127.0.0.1 and is stopped by
# PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
SESSIONS="${SESSIONS:-5000}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --bin waitroom --example bare_axum
scratch="$(mktemp -d -t waitroom-bench.XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; rm -rf "$scratch"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

admin="bench-admin-token-0123456789"
wr_port="$(free_port)"; bare_port="$(free_port)"
WAITROOM_LOG=warn target/release/waitroom serve --listen "127.0.0.1:$wr_port" --data-dir "$scratch/data" \
  --admin-token "$admin" --join-rate-per-ip 0 >"$scratch/waitroom.out" 2>&1 &
pids+=("$!")
target/release/examples/bare_axum "127.0.0.1:$bare_port" >"$scratch/bare.out" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$wr_port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$wr_port/readyz" >/dev/null

# A room where everyone waits and nobody expires during the runs.
curl -sf -X PUT "http://127.0.0.1:$wr_port/api/waiting-room/rooms/bench" -H "Authorization: Bearer $admin" \
  -H 'Content-Type: application/json' \
  -d '{"capacity":100,"waitingIdleTimeoutSeconds":3600,"activeIdleTimeoutSeconds":3600,"maxActiveSeconds":7200,"heartbeatIntervalSeconds":10}' >/dev/null
python3 - "$wr_port" "$SESSIONS" "$scratch/ids" <<'PY'
import concurrent.futures, json, sys, urllib.request
port, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def join(_):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/waiting-room/sessions", method="POST",
        data=b'{"roomId":"bench"}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["waitingRoomSessionId"]
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    ids = list(pool.map(join, range(n)))
open(out, "w").write("\n".join(ids) + "\n")
PY

run() { # name url script -> requests/s
  local out
  out="$(IDS_FILE="$scratch/ids" ROOM=bench wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$3" "$2")"
  echo "$out" >"$scratch/$1.wrk"
  local rps p50 p99 errors
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  errors="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  printf '%-22s %12s req/s   p50 %-9s p99 %-9s non-2xx %s\n' "$1" "$rps" "$p50" "$p99" "${errors:-0}"
  echo "$rps" >"$scratch/$1.rps"
}

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION on $(nproc) cores; $SESSIONS sessions polled at random"
run "bare axum polls" "http://127.0.0.1:$bare_port" bench/poll.lua
run "waitroom polls" "http://127.0.0.1:$wr_port" bench/poll.lua
run "bare axum joins" "http://127.0.0.1:$bare_port" bench/join.lua
run "waitroom joins" "http://127.0.0.1:$wr_port" bench/join.lua
ratio() { python3 -c "print(f'{float(open(\"$scratch/$1.rps\").read())/float(open(\"$scratch/$2.rps\").read()):.2f}')"; }
echo "polls: waitroom / bare axum = $(ratio "waitroom polls" "bare axum polls")   (target >= 0.8)"
echo "joins: waitroom / bare axum = $(ratio "waitroom joins" "bare axum joins")   (target >= 0.5)"
