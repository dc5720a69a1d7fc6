#!/usr/bin/env bash
# The acceptance run of issue 6: `waitroom load` against one embedded node (release build),
# 50 000 users arriving within 10 s, capacity 500. Required: zero failed joins, capacity
# overshoot 0, FIFO inversions 0; utilisation and refill latency reported. Writes report.json,
# summary.txt, the SVG charts and a README.md (exact command, machine, load average) into OUT.
#
#   bench/acceptance.sh                              # into bench/results/acceptance-<UTC date>
#   OUT=bench/results/my-run USERS=10000 bench/acceptance.sh
#
# Admitted users hold their slot HOLD_SECONDS (uniform), polling every 2 s and heartbeating
# every 10 s while they wait (the load tool's defaults). Exits 1 if the gate failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
USERS="${USERS:-50000}"
ARRIVAL="${ARRIVAL:-ramp:10}"
CAPACITY="${CAPACITY:-500}"
HOLD_SECONDS="${HOLD_SECONDS:-1..5}"
SEED="${SEED:-1}"
CONNECTIONS="${CONNECTIONS:-256}"
# Requests and ETA samples kept for the metrics: ~10 M polls, heartbeats and ETA samples at these
# settings, more on a busy machine (slower turnover, more polls); the tool's default (10 M) can
# stop the run early ("trace-full"). ~30 bytes each.
TRACE_RECORDS_MAX="${TRACE_RECORDS_MAX:-30000000}"
out="${OUT:-bench/results/acceptance-$(date -u +%Y-%m-%d)}"
mkdir -p "$out"

bench_build --bin waitroom
bench_start_waitroom acceptance
# The command as recorded: the node's address is random, the admin token comes from the
# environment (WAITROOM_ADMIN_TOKEN), never the command line.
command=(waitroom load --url "$WAITROOM_URL" --room acceptance --capacity "$CAPACITY"
  --users "$USERS" --arrival "$ARRIVAL" --hold-seconds "$HOLD_SECONDS" --seed "$SEED"
  --connections-max "$CONNECTIONS" --trace-records-max "$TRACE_RECORDS_MAX" --no-progress --out "$out")
echo "acceptance: ${command[*]}"
echo "on $(bench_machine)"
loadavg_before="$(bench_loadavg)"
echo "load average before: $loadavg_before"
bench_sample_loadavg "$bench_scratch/loadavg"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
status=0
WAITROOM_ADMIN_TOKEN="$BENCH_ADMIN_TOKEN" "$BENCH_BIN/${command[0]}" "${command[@]:1}" \
  >"$bench_scratch/stdout" 2>"$bench_scratch/stderr" || status=$?
bench_stop "$LOADAVG_PID"
loadavg_after="$(bench_loadavg)"
cat "$bench_scratch/stdout"
echo "load average after: $loadavg_after"
[ "$status" -le 1 ] || { cat "$bench_scratch/stderr" >&2; exit "$status"; }

python3 - "$out" "$bench_scratch/loadavg" "$loadavg_before" "$loadavg_after" "$started" \
  "$(bench_machine)" "$(bench_version)" "${command[*]}" <<'PY'
import json, pathlib, sys
out, samples_path, before, after, started, machine, version, command = sys.argv[1:]
report = json.load(open(pathlib.Path(out) / "report.json"))
m = report["metrics"]
samples = [float(line.split()[1]) for line in open(samples_path) if line.strip()]
load = (f"{min(samples):.2f} / {sum(samples) / len(samples):.2f} / {max(samples):.2f}"
        if samples else "-")
joins = m["requests"]["join"]
polls = m["requests"].get("poll", {})
refill = m["refillLatency"]
up = refill["upperBoundMs"] or {}
low = refill["lowerBoundMs"] or {}
def lat(stats):
    l = stats.get("latencyMs") or {}
    return f"p50 {l.get('p50', 0):.2f} / p99 {l.get('p99', 0):.2f} / max {l.get('max', 0):.2f} ms"
def ratio(value):
    return "-" if value is None else f"{value:.3f}"
def check(ok):
    return "met" if ok else "**MISSED**"
server_overshoot = (m["overshoot"]["server"] or {}).get("overshoot")
text = f"""# Acceptance run: {m['users']['planned']} users within {report['options']['arrival'].split(':')[-1]} s, capacity {m['capacity']}, one embedded node

Produced by `bench/acceptance.sh` on {started} ({version}). Files: `report.json` (every figure, the options, the machine), `summary.txt` (the tool's
summary), `active.svg`, `queue.svg`, `eta.svg`, `latency-join.svg`, `latency-poll.svg`.

## Command
A fresh node (`waitroom serve --listen 127.0.0.1:0 --data-dir <empty dir> --admin-token <token>
--join-rate-per-ip 0`, release build, embedded file log, default fsync policy), then, with
`WAITROOM_ADMIN_TOKEN` set in the environment:

```
{command}
```

## Machine
{machine}.
Shared with other engineers' builds: load average (1, 5, 15 min) {before} before the run,
{after} after; 1-minute load average sampled every 5 s during the run (min / mean / max):
{load}. The node and the load tool ran on the same {report['machine']['cores']} cores.

## Results
| requirement | measured | |
|---|---|---|
| zero failed joins | {m['users']['joinFailed']} failed of {joins['count']} ({joins['failed']} failed requests) | {check(m['users']['joinFailed'] == 0 and joins['failed'] == 0)} |
| capacity overshoot 0 | clients {m['overshoot']['client']['overshoot']} (max ACTIVE proven {m['overshoot']['client']['activeMax']}), server stats {server_overshoot} | {check(m['overshoot']['client']['overshoot'] == 0 and not server_overshoot)} |
| FIFO inversions 0 | {m['fifo']['inversions']} among {m['fifo']['sessions']} admitted | {check(m['fifo']['inversions'] == 0)} |
| utilisation reported | clients {ratio(m['utilisation']['client'])} over {m['utilisation']['clientWaitingSeconds']:.0f} s with people waiting; server stats {ratio(m['utilisation']['server'])} | reported |
| refill latency reported | {refill['refilled']} of {refill['freedWhileWaiting']} slots freed while people waited refilled, {refill['unrefilled']} not; upper bound p50 {up.get('p50', 0):.2f} / p99 {up.get('p99', 0):.2f} / max {up.get('max', 0):.2f} ms, lower bound p50 {low.get('p50', 0):.2f} / p99 {low.get('p99', 0):.2f} ms | reported |

Also: gate {'passed' if report['gate']['passed'] else 'FAILED: ' + '; '.join(report['gate']['failures'])};
stop reason `{report['stopReason']}` after {m['durationSeconds']:.0f} s; {m['users']['completed']} users completed;
joins {joins['ok']} ok at {joins['okPerSecond']:.0f}/s, latency {lat(joins)};
polls {polls.get('ok', 0)} ok at {polls.get('okPerSecond') or 0:.0f}/s, latency {lat(polls)};
failed requests of any kind: {m['failures']['total']}.
"""
open(pathlib.Path(out) / "README.md", "w").write(text)
print(f"wrote {out}/README.md")
PY
exit "$status"
