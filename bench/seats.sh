#!/usr/bin/env bash
# Thundering herd vs metered: the same crowd sent at a protected seat-selection service
# (crates/waitroom/examples/seat_service.rs: seats in PostgreSQL, a seat reserved at most once by
# a primary key and a transaction, a pool of database connections, a few ms of work per
# reservation inside its transaction) twice:
#   herd     every user POSTs /reserve directly, at its arrival (`waitroom load --direct`);
#   metered  every user joins a waitroom room of capacity CAPACITY, waits, and once ACTIVE POSTs
#            /reserve with its admission token (which the seat service verifies offline with
#            waitroom_token), then completes (`waitroom load --protected-url`).
# Prints the seat service's latency, errors, throughput and double bookings both ways, and the
# ratios. Both runs use the same binary, seed, arrival profile and client bounds.
#
#   bench/seats.sh                                  # 20 000 users within 1 s, capacity 200
#   USERS=5000 ARRIVAL=ramp:2 bench/seats.sh
#   OUT=dir bench/seats.sh                          # keep reports, charts and audits in dir
#
# Needs python3, curl and PostgreSQL's server (apt-get install postgresql): a private cluster,
# started by the test kit's launcher (waitroom-servers postgres) in the scratch dir, holds the
# seats; each run has an event of its own in it. Everything listens on 127.0.0.1 and is stopped by
# PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null \
  || { echo "PostgreSQL is needed (apt-get install postgresql)" >&2; exit 1; }
source bench/lib.sh
USERS="${USERS:-20000}"
ARRIVAL="${ARRIVAL:-ramp:1}"
CAPACITY="${CAPACITY:-200}"
SEED="${SEED:-1}"
# The load tool's in-flight bound, per server: its ceiling, so the herd is as concurrent as one
# client address allows.
CONNECTIONS="${CONNECTIONS:-16384}"
POLL_INTERVAL_MS="${POLL_INTERVAL_MS:-2000}"
# The seat service (see its --help): 25 000 seats, 16 connections, 5 ms per reservation (so at
# most 3 200 reservations/s), 5 s connection acquire timeout.
SEAT_ARGS=(--seats "${SEATS:-25000}" --pool "${POOL:-16}" --work-ms "${WORK_MS:-5}"
  --acquire-timeout-ms "${ACQUIRE_TIMEOUT_MS:-5000}")
ROOM=seats
out="${OUT:-$bench_scratch/seats}"
mkdir -p "$out"

bench_build --bin waitroom --example seat_service
bench_build_servers
load=("$BENCH_BIN/waitroom" load --users "$USERS" --arrival "$ARRIVAL" --seed "$SEED"
  --connections-max "$CONNECTIONS" --no-progress)
eval "$("$BENCH_BIN/waitroom-servers" postgres --dir "$bench_scratch/postgres")"
bench_server_pids+=("$PID")
postgres_pid="$PID"
SEAT_ARGS+=(--database-url "$URL")
# The launcher's rule: Debian's newest /usr/lib/postgresql/<major>/bin, else PATH.
postgres_bin="$(compgen -G '/usr/lib/postgresql/*/bin/postgres' | sort -V | tail -n1 || true)"
postgres_version="$("${postgres_bin:-postgres}" --version)"
echo "seats: $USERS users, $ARRIVAL, on $(bench_machine); $postgres_version, seats in a private cluster"

# 1. The herd: straight at the seat service.
bench_start_seats herd "${SEAT_ARGS[@]}" --event herd
echo "herd: load average before $(bench_loadavg)" | tee "$out/loadavg.txt"
"${load[@]}" --url "$SEATS_URL" --direct --protected-url "$SEATS_URL/reserve" --out "$out/herd" \
  >"$bench_scratch/herd.log" 2>&1 || { cat "$bench_scratch/herd.log" >&2; exit 1; }
# No waiting room in this run: its charts would be empty.
rm -f "$out/herd/"*.svg
echo "herd: load average after $(bench_loadavg)" | tee -a "$out/loadavg.txt"
curl -sf "$SEATS_URL/audit" >"$out/herd/audit.json"
bench_stop "$SEATS_PID"

# 2. Metered: through a waitroom room of capacity CAPACITY in front of the same service.
# The load tool's connections all come from 127.0.0.1: the node's per-address cap (1024 by
# default) would close most of them at accept.
WAITROOM_CONNECTIONS_PER_ADDRESS_MAX="$CONNECTIONS" bench_start_waitroom metered
curl -sf "$WAITROOM_URL/.well-known/jwks.json" >"$out/jwks.json"
bench_start_seats metered "${SEAT_ARGS[@]}" --event metered --jwks "$out/jwks.json" --issuer waitroom --room "$ROOM"
echo "metered: load average before $(bench_loadavg)" | tee -a "$out/loadavg.txt"
WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "${load[@]}" --url "$WAITROOM_URL" --room "$ROOM" \
  --capacity "$CAPACITY" --hold-seconds 0 --poll-interval-ms "$POLL_INTERVAL_MS" \
  --protected-url "$SEATS_URL/reserve" --out "$out/metered" >"$bench_scratch/metered.log" 2>&1 || status=$?
if [ "${status:-0}" -gt 1 ]; then cat "$bench_scratch/metered.log" >&2; exit 1; fi
[ "${status:-0}" -eq 0 ] || echo "metered: the load tool's gate failed (see $out/metered/summary.txt)"
echo "metered: load average after $(bench_loadavg)" | tee -a "$out/loadavg.txt"
curl -sf "$SEATS_URL/audit" >"$out/metered/audit.json"
bench_stop "$SEATS_PID"
bench_stop "$WAITROOM_PID"
bench_server_stop "$postgres_pid"
rm -f "$out/jwks.json"

python3 - "$out" <<'PY' | tee "$out/seats.txt"
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def figures(mode):
    report = json.load(open(out / mode / "report.json"))
    audit = json.load(open(out / mode / "audit.json"))
    protected = report["metrics"]["requests"].get("protected", {})
    failures = report["metrics"]["failures"]["byKind"].get("protected", {})
    # Errors: no answer in time, no connection, or a 5xx. 4xx (no seat left, bad token) apart.
    errors = sum(count for label, count in failures.items()
                 if label in ("timeout", "transport", "bad-body") or label.startswith("5"))
    refused = sum(count for label, count in failures.items() if label.startswith("4"))
    latency = protected.get("latencyMs") or {}
    waitroom_failures = {kind: labels for kind, labels in report["metrics"]["failures"]["byKind"].items()
                         if kind != "protected"}
    return {
        "users": report["metrics"]["users"]["planned"],
        "requests": protected.get("count", 0),
        "ok": protected.get("ok", 0),
        "errors": errors,
        "refused4xx": refused,
        "failuresByLabel": failures,
        "okPerSecond": protected.get("okPerSecond"),
        "latencyMs": latency,
        "runSeconds": report["metrics"]["durationSeconds"],
        "doubleBookedSeats": audit["doubleBookedSeats"],
        "seatsReserved": audit["seatsReserved"],
        "rowsDisagreeingWithLedger": audit["rowsDisagreeingWithLedger"],
        "seatServiceInFlightMax": audit["inFlightMax"],
        "seatConflicts": audit["conflicts"],
        "poolTimeouts": audit["poolTimeouts"],
        "databaseErrors": audit["databaseErrors"],
        "unauthorized": audit["unauthorized"],
        "waitroomFailures": waitroom_failures,
        "gate": report["gate"] if mode == "metered" else None,
        "overshoot": report["metrics"]["overshoot"] if mode == "metered" else None,
        "joinLatencyMs": report["metrics"]["requests"].get("join", {}).get("latencyMs"),
    }
herd, metered = figures("herd"), figures("metered")
def row(name, key, fmt):
    print(f"{name:<34}{fmt(herd[key]):>16}{fmt(metered[key]):>16}")
number = lambda v: "-" if v is None else f"{v:.0f}"
millis = lambda v: "-" if v is None else f"{v:.1f} ms"
print(f"{'seat service, as its users saw it':<34}{'herd':>16}{'via waitroom':>16}")
row("reservation requests", "requests", number)
row("reserved (2xx)", "ok", number)
row("errors (timeout/5xx/transport)", "errors", number)
row("refused (4xx)", "refused4xx", number)
for p in ("p50", "p90", "p99", "p999", "max"):
    print(f"{'latency ' + p:<34}{millis(herd['latencyMs'].get(p)):>16}{millis(metered['latencyMs'].get(p)):>16}")
row("throughput (2xx/s)", "okPerSecond", number)
row("run length (s)", "runSeconds", lambda v: f"{v:.1f}")
row("max requests in the seat service", "seatServiceInFlightMax", number)
row("seat conflicts (seat taken)", "seatConflicts", number)
row("double-booked seats (must be 0)", "doubleBookedSeats", number)
row("reservations ≠ ledger (must be 0)", "rowsDisagreeingWithLedger", number)
row("database errors", "databaseErrors", number)
ratios = {
    "p99": herd["latencyMs"]["p99"] / metered["latencyMs"]["p99"],
    "p50": herd["latencyMs"]["p50"] / metered["latencyMs"]["p50"],
    "max": herd["latencyMs"]["max"] / metered["latencyMs"]["max"],
    "throughput": metered["okPerSecond"] / herd["okPerSecond"],
}
print(f"p99: herd / via waitroom = {ratios['p99']:.1f}x   (target >= 10: {'met' if ratios['p99'] >= 10 else 'MISSED'})")
print(f"p50: herd / via waitroom = {ratios['p50']:.1f}x;  max: {ratios['max']:.1f}x;  "
      f"throughput via waitroom / herd = {ratios['throughput']:.2f}")
ok = herd["doubleBookedSeats"] == 0 and metered["doubleBookedSeats"] == 0
print(f"double bookings: herd {herd['doubleBookedSeats']}, via waitroom {metered['doubleBookedSeats']} "
      f"({'none, as required' if ok else 'DOUBLE BOOKINGS FOUND'})")
if metered["gate"] is not None:
    gate = metered["gate"]
    overshoot = metered["overshoot"]
    print(f"waitroom: gate {'passed' if gate['passed'] else 'FAILED ' + '; '.join(gate['failures'])}, "
          f"capacity overshoot {overshoot['client']['overshoot']} (clients) / "
          f"{(overshoot['server'] or {}).get('overshoot', '-')} (stats), "
          f"failed waitroom requests {metered['waitroomFailures'] or 'none'}")
json.dump({"herd": herd, "metered": metered, "ratios": ratios}, open(out / "seats.json", "w"), indent=2)
PY
