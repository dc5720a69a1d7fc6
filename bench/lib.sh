# Shared by the bench scripts (sourced, not run): binaries, process bookkeeping, starting a node
# and the seat service, and describing the machine. Everything listens on 127.0.0.1; every
# process started here is stopped by PID when the calling script exits.

# Where cargo puts the release binaries.
BENCH_BIN="${CARGO_TARGET_DIR:-target}/release"
# Admin token of the nodes started here (local, throw-away).
BENCH_ADMIN_TOKEN="bench-admin-token-0123456789"

bench_pids=()
# Servers started with the test kit's launcher (not children of this shell): stopped by it.
bench_server_pids=()
bench_scratch="$(mktemp -d -t waitroom-bench.XXXXXX)"

bench_cleanup() {
  local pid
  for pid in "${bench_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  bench_pids=()
  if [ "${#bench_server_pids[@]}" -gt 0 ]; then
    "$BENCH_BIN/waitroom-servers" stop "${bench_server_pids[@]}" || true
  fi
  bench_server_pids=()
  rm -rf "$bench_scratch"
}
trap bench_cleanup EXIT

# bench_free_port: a free TCP port on 127.0.0.1.
bench_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# bench_join_sessions ROOM COUNT OUT URL...: joins COUNT sessions to ROOM, round-robin over the
# node URLs, 32 at a time, and writes their ids to OUT, one per line.
bench_join_sessions() {
  python3 - "$@" <<'PY'
import concurrent.futures, json, sys, urllib.request
room, n, out, urls = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
body = json.dumps({"roomId": room}).encode()
def join(i):
    req = urllib.request.Request(f"{urls[i % len(urls)]}/api/waiting-room/sessions", method="POST",
        data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["waitingRoomSessionId"]
with concurrent.futures.ThreadPoolExecutor(32) as pool:
    ids = list(pool.map(join, range(n)))
open(out, "w").write("\n".join(ids) + "\n")
PY
}

# bench_stop PID: stops one process started here.
bench_stop() {
  local pid="$1" kept=() other
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for other in "${bench_pids[@]}"; do [ "$other" = "$pid" ] || kept+=("$other"); done
  bench_pids=("${kept[@]}")
}

# bench_build ARGS...: `cargo build --release` of what the scripts run, unless NO_BUILD is set.
bench_build() {
  [ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p waitroom "$@"
}

# bench_build_servers: the test kit's server launcher (`waitroom-servers`), unless NO_BUILD is set.
bench_build_servers() {
  [ -n "${NO_BUILD:-}" ] || cargo build --release --quiet -p waitroom-log --features testkit,redis --bin waitroom-servers
}

# bench_server_stop PID: stops a server started with the test kit's launcher.
bench_server_stop() {
  local pid="$1" kept=() other
  "$BENCH_BIN/waitroom-servers" stop "$pid" || true
  for other in "${bench_server_pids[@]}"; do [ "$other" = "$pid" ] || kept+=("$other"); done
  bench_server_pids=("${kept[@]}")
}

# bench_redis DIR PERSISTENCE: starts a redis-server with the test kit's launcher (none,
# everysec or always); sets REDIS_URL and REDIS_PID, and stops it on exit.
bench_redis() {
  local URL PID
  eval "$("$BENCH_BIN/waitroom-servers" redis --dir "$1" --persistence "$2")"
  bench_server_pids+=("$PID")
  REDIS_URL="$URL"
  REDIS_PID="$PID"
}

# bench_url FILE WHAT: waits (≤ 10 s) for "WHAT serving at http://…" in FILE; prints the URL.
bench_url() {
  local url=""
  for _ in $(seq 1 100); do
    url="$(sed -n "s/^$2 serving at //p" "$1" 2>/dev/null | head -n 1)"
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "$2 did not start; its output:" >&2; cat "$1" >&2; return 1; }
  echo "$url"
}

# bench_start_waitroom NAME [ARGS...]: starts a fresh embedded node (release build, its own data
# dir, the per-IP join limit off because all the load comes from one address); sets WAITROOM_URL
# and WAITROOM_PID once /readyz answers 200. ARGS go to `waitroom serve` (`--backend memory:`).
bench_start_waitroom() {
  local dir="$bench_scratch/$1"
  shift
  mkdir -p "$dir"
  WAITROOM_LOG="${WAITROOM_LOG:-warn}" "$BENCH_BIN/waitroom" serve --listen 127.0.0.1:0 \
    --data-dir "$dir/data" --admin-token "$BENCH_ADMIN_TOKEN" --join-rate-per-ip 0 "$@" \
    >"$dir/stdout" 2>"$dir/stderr" &
  WAITROOM_PID=$!
  bench_pids+=("$WAITROOM_PID")
  WAITROOM_URL="$(bench_url "$dir/stdout" "waitroom is")"
  for _ in $(seq 1 100); do
    curl -sf "$WAITROOM_URL/readyz" >/dev/null && return 0
    sleep 0.1
  done
  echo "waitroom at $WAITROOM_URL never became ready" >&2
  return 1
}

# bench_start_node NAME BACKEND [ARGS...]: starts a node of a fleet on BACKEND (release build, data
# dir and output NAME.out under the scratch dir, the fleet's shared signing key, the per-IP join
# limit off), waits (≤ 30 s) until /readyz answers 200 and appends its URL to bench_urls. ARGS go
# to `waitroom serve`; WAITROOM_LOG sets its log filter (warn).
bench_urls=()
bench_start_node() {
  local name="$1" backend="$2" port
  shift 2
  [ -f "$bench_scratch/key.pem" ] || openssl genpkey -algorithm ed25519 -out "$bench_scratch/key.pem" 2>/dev/null
  port="$(bench_free_port)"
  WAITROOM_LOG="${WAITROOM_LOG:-warn}" "$BENCH_BIN/waitroom" serve --listen "127.0.0.1:$port" \
    --data-dir "$bench_scratch/$name" --backend "$backend" --signing-key "$bench_scratch/key.pem" \
    --admin-token "$BENCH_ADMIN_TOKEN" --join-rate-per-ip 0 "$@" >"$bench_scratch/$name.out" 2>&1 &
  bench_pids+=("$!")
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$bench_scratch/$name.out" >&2; exit 1; }
  bench_urls+=("http://127.0.0.1:$port")
}

# bench_room NAME CAPACITY: creates the room NAME through the first of bench_urls, with timeouts
# long enough that nobody expires during the runs.
bench_room() {
  curl -sf -X PUT "${bench_urls[0]}/api/waiting-room/rooms/$1" -H "Authorization: Bearer $BENCH_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' \
    -d "{\"capacity\":$2,\"waitingIdleTimeoutSeconds\":3600,\"activeIdleTimeoutSeconds\":3600,\"maxActiveSeconds\":7200}" >/dev/null
}

# bench_wrk SCRIPT ROOM URL...: `wrk -t1 -c$CONNECTIONS -d$DURATION -s SCRIPT` against every URL at
# once (the scripts read ROOM and the session ids in the scratch dir's `ids`); prints the sums
# "requests/s requests non-2xx".
bench_wrk() {
  local script="$1" room="$2" i=0 files=() runs=() url
  shift 2
  for url in "$@"; do
    IDS_FILE="$bench_scratch/ids" ROOM="$room" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$script" "$url" >"$bench_scratch/wrk.$i" &
    runs+=("$!"); files+=("$bench_scratch/wrk.$i"); i=$((i + 1))
  done
  wait "${runs[@]}"
  awk '/Requests\/sec/ {rps += $2} / requests in / {n += $1} /Non-2xx/ {bad += $NF} END {printf "%.0f %d %d\n", rps, n, bad}' "${files[@]}"
}

# bench_start_seats NAME ARGS...: starts the seat service (examples/seat_service.rs) with ARGS;
# sets SEATS_URL and SEATS_PID.
bench_start_seats() {
  local dir="$bench_scratch/$1"
  shift
  mkdir -p "$dir"
  "$BENCH_BIN/examples/seat_service" --listen 127.0.0.1:0 "$@" >"$dir/stdout" 2>"$dir/stderr" &
  SEATS_PID=$!
  bench_pids+=("$SEATS_PID")
  SEATS_URL="$(bench_url "$dir/stdout" "seat service")"
}

# AWS list prices (us-east-1, as published by AWS in 2025), used by bench/sqs.sh and
# bench/compare.sh: SQS FIFO $0.50 per million requests (a request per 64 KiB of payload); S3
# Standard PUT/COPY/POST/LIST $0.005 per 1 000, GET $0.0004 per 1 000, DELETE free.
BENCH_PRICES_DATED="us-east-1 list prices, 2025"
BENCH_SQS_PER_MILLION=0.50
BENCH_S3_PUT_LIST_PER_MILLION=5.00
BENCH_S3_GET_PER_MILLION=0.40

# bench_counter NAME URL...: the sum over the nodes at URL... of the samples on their /metrics
# whose series starts with NAME (a metric name, or a name and the start of its labels).
bench_counter() {
  local name="$1" url
  shift
  for url in "$@"; do curl -sf "$url/metrics" || true; done \
    | awk -v name="$name" 'index($0, name) == 1 {sum += $NF} END {printf "%d\n", sum}'
}

# bench_billed URL...: the SQS and S3 requests the nodes at URL... made so far
# (waitroom_log_requests_total), as "sqs s3_put_list s3_get"; receives that came back empty are
# left out (against moto the nodes short-poll; see bench/sqs.sh).
bench_billed() {
  local url
  for url in "$@"; do curl -sf "$url/metrics" || true; done | awk '
    /^waitroom_log_requests_total\{/ {
      kind = $0; sub(/.*kind="/, "", kind); sub(/".*/, "", kind)
      if (kind ~ /^sqs_/ && kind != "sqs_receive_empty") sqs += $NF
      else if (kind == "s3_put" || kind == "s3_list") putlist += $NF
      else if (kind == "s3_get") get += $NF
    }
    END {printf "%d %d %d\n", sqs, putlist, get}'
}

# bench_loadavg: the 1, 5 and 15 minute load averages now.
bench_loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# bench_sample_loadavg FILE: appends "<unix s> <1-min load average>" to FILE every 5 s until the
# script ends (or bench_stop $LOADAVG_PID).
bench_sample_loadavg() {
  ( while :; do echo "$(date +%s) $(cut -d' ' -f1 /proc/loadavg)" >>"$1"; sleep 5; done ) &
  LOADAVG_PID=$!
  bench_pids+=("$LOADAVG_PID")
}

# bench_machine: one line describing the machine, from /proc.
bench_machine() {
  local model memory_gib
  model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  memory_gib="$(awk '/^MemTotal:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
  printf '%s cores (%s), %s GiB memory (MemTotal), Linux %s' "$(nproc --all)" "${model:-unknown CPU}" \
    "$memory_gib" "$(uname -r)"
}

# bench_version: which code was measured: the commit, whether the tree had uncommitted
# changes (outside bench/results, which the run itself writes), and when the waitroom binary
# was built.
bench_version() {
  local commit dirty=""
  commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [ -z "$(git status --porcelain -- . ':!bench/results' 2>/dev/null)" ] || dirty=" + uncommitted changes"
  echo "commit $commit$dirty, binaries built $(date -u -r "$BENCH_BIN/waitroom" +%Y-%m-%dT%H:%M:%SZ)"
}

# Enough file descriptors for the herd: the load tool keeps up to --connections-max
# connections per server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
