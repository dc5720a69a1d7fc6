#!/usr/bin/env bash
# Every benchmark of bench/README.md, in one go, on this machine, one after the other (never
# two at once: they would measure each other). Writes everything under bench/results/<NAME>/:
#   http/        bench/http.sh: status polls and joins, waitroom vs bare axum (wrk outputs, http.json)
#   seats/       bench/seats.sh: the seat service under the herd, directly and through waitroom
#   acceptance/  bench/acceptance.sh: 50 000 users within 10 s, capacity 500 (report, charts, README)
#   README.md    the machine, the load averages, the figures and the ratios
# and prints the ratios. Takes about 17 minutes (acceptance ~7, seats ~2.5, http ~4 + set-up).
#
#   bench/run-all.sh                    # NAME defaults to the UTC date
#   NAME=before-my-change bench/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
NAME="${NAME:-$(date -u +%Y-%m-%d)}"
results="bench/results/$NAME"
mkdir -p "$results"

bench_build --bin waitroom --example bare_axum --example seat_service
export NO_BUILD=1
# Five interleaved wrk runs per kind: this machine is shared, one run can be hit by a build.
export REPEAT="${REPEAT:-5}"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "== bench/run-all.sh → $results, on $(bench_machine), load average $(bench_loadavg)"
echo "== 1. status polls and joins: waitroom vs bare axum"
OUT="$results/http" bench/http.sh
echo "== 2. thundering herd vs metered"
OUT="$results/seats" bench/seats.sh
echo "== 3. acceptance: 50 000 users within 10 s, capacity 500"
acceptance=0
OUT="$results/acceptance" bench/acceptance.sh || acceptance=$?

printf '%s\n%s\n%s\n' "$started" "$(bench_machine)" "$(bench_version)" >"$results/run.txt"
python3 bench/summarise.py "$results"
exit "$acceptance"
