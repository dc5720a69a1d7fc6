#!/usr/bin/env bash
# How honest the estimated wait is, before and after issue 19's estimator: every scenario run
# against two embedded nodes side by side, on the same workload (same seed, same flags, at the
# same time) —
#   old: OLD_BIN/waitroom, a release build of the estimator before the change (main at 4d7f297:
#        a figure from the freed slots over the window since the room was created);
#   new: this tree's release build (a figure only when the range is narrow, else a range alone,
#        else "not yet") —
# each measured by `waitroom load` (this tree's, for both: an old node sends no range, so its
# answers are figures or "not yet"). Scenarios (capacity 50, each user holding 10..30 s, reads
# every 2 s, at most DURATION s, so every room runs past the two minutes of the 60 s rule):
#   steady    Poisson arrivals at 3.5/s (more than the 2.5/s the slots turn over)
#   ramp      the users evenly over 200 s (4.5/s)
#   burst     everyone at the opening
#   capacity  Poisson 3.5/s; capacity 50 → 100 at 70 s → 30 at 140 s (admin API)
#   pause     Poisson 3.5/s; paused at 60 s, resumed at 100 s (admin API)
#   abandon   Poisson 3.5/s; 30 % of the users leave the line after 5..120 s if still waiting
# Into OUT: <scenario>/<old|new>/ (each run's report.json, summary.txt and charts; the stdout of
# the run), summary.txt (the eta lines of every run) and table.md (the before/after table).
#
#   OLD_BIN=/path/to/old/target/release bench/estimates.sh   # into bench/results/<UTC date>/estimates
#   SCENARIOS="steady burst" OLD_BIN=… bench/estimates.sh
#   SCENARIOS="capacity pause" bench/estimates.sh           # no OLD_BIN: this tree's node only
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
OLD_BIN="${OLD_BIN:-}"
SCENARIOS="${SCENARIOS:-steady ramp burst capacity pause abandon}"
CAPACITY="${CAPACITY:-50}"
HOLD_SECONDS="${HOLD_SECONDS:-10..30}"
DURATION="${DURATION:-240}"
SEED="${SEED:-1}"
out="${OUT:-bench/results/$(date -u +%Y-%m-%d)/estimates}"
mkdir -p "$out"

bench_build --bin waitroom
estimators=(new)
if [ -n "$OLD_BIN" ]; then
  [ -x "$OLD_BIN/waitroom" ] || { echo "no $OLD_BIN/waitroom" >&2; exit 1; }
  estimators=(old new)
fi
bench_start_waitroom new
new_url="$WAITROOM_URL"
old_url=""
if [ -n "$OLD_BIN" ]; then
  BENCH_BIN="$OLD_BIN" bench_start_waitroom old
  old_url="$WAITROOM_URL"
fi

scenario_flags() {
  case "$1" in
    steady) echo "--users 700 --arrival poisson:3.5" ;;
    ramp) echo "--users 900 --arrival ramp:200" ;;
    burst) echo "--users 550 --arrival all-at-once" ;;
    capacity) echo "--users 700 --arrival poisson:3.5 --reconfigure 70:capacity=100 --reconfigure 140:capacity=30" ;;
    pause) echo "--users 700 --arrival poisson:3.5 --reconfigure 60:pause --reconfigure 100:resume" ;;
    abandon) echo "--users 700 --arrival poisson:3.5 --abandon-waiting-ratio 0.3 --abandon-waiting-after-seconds 5..120" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

summary="$out/summary.txt"
{
  echo "estimates: capacity $CAPACITY, holds $HOLD_SECONDS s, reads every 2 s, at most $DURATION s a run;"
  echo "${estimators[*]} node(s) side by side on the same workload; on $(bench_machine)"
  echo "new: $(bench_version)"
  [ -z "$OLD_BIN" ] || echo "old: $("$OLD_BIN/waitroom" --version 2>/dev/null || echo waitroom), built $(date -u -r "$OLD_BIN/waitroom" +%Y-%m-%dT%H:%M:%SZ)"
} >"$summary"
for scenario in $SCENARIOS; do
  read -r -a flags <<<"$(scenario_flags "$scenario")"
  pids=()
  for which in "${estimators[@]}"; do
    url="$old_url"
    [ "$which" = new ] && url="$new_url"
    command=(waitroom load --url "$url" --room "estimates-$scenario" --capacity "$CAPACITY"
      "${flags[@]}" --hold-seconds "$HOLD_SECONDS" --seed "$SEED" --heartbeat-interval-seconds 10
      --reads interval --poll-interval-ms 2000 --duration-max-seconds "$DURATION"
      --request-timeout-ms 15000 --connections-max 256 --no-progress --no-gate
      --out "$out/$scenario/$which")
    echo "== $scenario/$which: ${command[*]} (load average before: $(bench_loadavg))" | tee -a "$summary"
    mkdir -p "$out/$scenario/$which"
    WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "$BENCH_BIN/${command[0]}" "${command[@]:1}" \
      >"$out/$scenario/$which/stdout.txt" 2>"$bench_scratch/$scenario-$which.stderr" &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { cat "$bench_scratch/$scenario"-*.stderr >&2; exit 1; }
  done
  for which in "${estimators[@]}"; do
    echo "-- $scenario/$which" >>"$summary"
    grep -E '^(users|overshoot|eta)' "$out/$scenario/$which/stdout.txt" >>"$summary" || true
  done
done

python3 - "$out" "${estimators[*]}" $SCENARIOS >"$out/table.md" <<'PY'
import json, sys
out, estimators, scenarios = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
def pct(p, key, scale=1.0, digits=1):
    return "-" if not p else f"{p[key] * scale:.{digits}f}"
print("| scenario | estimator | figures | figure error %, p50 / p90 / p99 / max | figure error s, p50 / p90 / p99 / max "
      "| ranges (wait inside) | not yet | shown error %, p90 / p99 | after 120 s: figures off > 60 s (max s) | after 120 s: ranges missed by > 60 s (max s) "
      "| shown, no change of the room during the wait: n, error % p90 / p99 | shown, a change during the wait: n, error % p90 / p99 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for scenario in scenarios:
    for which in estimators:
        eta = json.load(open(f"{out}/{scenario}/{which}/report.json"))["metrics"]["etaError"]
        rel, ab = eta["relative"], eta["absoluteSeconds"]
        shown = eta["shown"]["relative"]
        settled = eta["settled"]
        ranges = eta["ranges"]
        total = eta["samples"] + ranges["samples"] + eta["notYetSamples"]
        fig_max = settled["figureAbsoluteMaxSeconds"]
        range_max = settled["rangeMissMaxSeconds"]
        no_change, across = eta.get("noChange"), eta.get("acrossChange")
        def split(part):
            if part is None:
                return "-"
            rel = part["relative"]
            return f"{part['samples']}: {pct(rel, 'p90', 100)} / {pct(rel, 'p99', 100)}"
        print(f"| {scenario} | {which} | {eta['samples']} "
              f"| {pct(rel, 'p50', 100)} / {pct(rel, 'p90', 100)} / {pct(rel, 'p99', 100)} / {pct(rel, 'max', 100)} "
              f"| {pct(ab, 'p50')} / {pct(ab, 'p90')} / {pct(ab, 'p99')} / {pct(ab, 'max')} "
              f"| {ranges['samples']} ({ranges['inside']}) "
              f"| {eta['notYetSamples']} of {total} "
              f"| {pct(shown, 'p90', 100)} / {pct(shown, 'p99', 100)} "
              f"| {settled['figuresOverLimit']} of {settled['figures']} ({'-' if fig_max is None else f'{fig_max:.1f}'}) "
              f"| {settled['rangesMissedOverLimit']} of {settled['ranges']} ({'-' if range_max is None else f'{range_max:.1f}'}) "
              f"| {split(no_change)} | {split(across)} |")
PY
cat "$summary" "$out/table.md"
