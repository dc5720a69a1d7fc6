#!/usr/bin/env python3
"""Summarises a bench/run-all.sh results directory: prints the ratios (also written to
ratios.txt) and writes its README.md from http/http.json, seats/seats.json,
acceptance/report.json and run.txt (start time, machine, commit; written by run-all.sh).
Re-run it after re-running one part:  python3 bench/summarise.py bench/results/<name>
"""
import json, pathlib, sys
results = pathlib.Path(sys.argv[1])
started, machine, version = (results / "run.txt").read_text().splitlines()[:3]
http = json.load(open(results / "http" / "http.json"))
seats = json.load(open(results / "seats" / "seats.json"))
acceptance = json.load(open(results / "acceptance" / "report.json"))
loadavg = (results / "seats" / "loadavg.txt").read_text().strip().splitlines()
m = acceptance["metrics"]
def verdict(ok):
    return "met" if ok else "MISSED"
lines = [
    f"status polls  waitroom / bare axum = {http['ratios']['polls']:.3f}  (target >= 0.8: {verdict(http['ratios']['polls'] >= 0.8)})",
    f"joins         waitroom / bare axum = {http['ratios']['joins']:.3f}  (target >= 0.85: {verdict(http['ratios']['joins'] >= 0.85)})",
    f"seat p99      herd / via waitroom  = {seats['ratios']['p99']:.1f}x (target >= 10: {verdict(seats['ratios']['p99'] >= 10)})",
    f"double-booked seats                = herd {seats['herd']['doubleBookedSeats']}, via waitroom {seats['metered']['doubleBookedSeats']} (must be 0)",
    f"acceptance    failed joins {m['users']['joinFailed']}, overshoot {m['overshoot']['client']['overshoot']} / "
    f"{(m['overshoot']['server'] or {}).get('overshoot')}, FIFO inversions {m['fifo']['inversions']}, "
    f"utilisation {'-' if m['utilisation']['client'] is None else format(m['utilisation']['client'], '.3f')}, refill p50/p99 upper bound "
    f"{(m['refillLatency']['upperBoundMs'] or {}).get('p50', 0):.2f}/{(m['refillLatency']['upperBoundMs'] or {}).get('p99', 0):.2f} ms "
    f"(gate {'passed' if acceptance['gate']['passed'] else 'FAILED'})",
]
print("\n".join(lines))
(results / "ratios.txt").write_text("\n".join(lines) + "\n")
h = http["results"]
def rate(name):
    return f"{h[name]['medianRequestsPerSecond']:.0f}"
def paired(kind):
    pairs = http.get("pairedRatios", {}).get(kind)
    if not pairs:
        return "-"
    return f"{pairs[0]:.2f}..{pairs[-1]:.2f} (median {sorted(pairs)[len(pairs) // 2]:.3f})"
def loads(name):
    return ", ".join(" ".join(f"{v:.2f}" for v in run["loadAverage"]) for run in h[name]["runs"])
herd, metered = seats["herd"], seats["metered"]
def ms(value):
    return "-" if value is None else f"{value:.1f}"
text = f"""# Benchmark results {results.name}

`bench/run-all.sh` started {started} ({version}) on
{machine}, shared with other engineers' builds (load averages below). Everything ran on the same
cores: servers, load generators and whatever else was running.

## Ratios
```
{chr(10).join(lines)}
```

## 1. Status polls and joins (`http/`)
wrk, {len(h['waitroom polls']['runs'])} interleaved runs per kind, median requests/s:

| | bare axum | waitroom | ratio | target |
|---|---|---|---|---|
| status polls | {rate('bare axum polls')} | {rate('waitroom polls')} | {http['ratios']['polls']:.3f} | ≥ 0.8 |
| joins | {rate('bare axum joins')} | {rate('waitroom joins')} | {http['ratios']['joins']:.3f} | ≥ 0.85 |

Run by run (each waitroom run against the bare run just before it), the ratios ranged
{paired('polls')} for polls and {paired('joins')} for joins.

Load average (1, 5, 15 min) before each waitroom poll run: {loads('waitroom polls')}; before
each waitroom join run: {loads('waitroom joins')}.

## 2. Thundering herd vs metered (`seats/`)
| seat service, as its users saw it | herd | via waitroom |
|---|---|---|
| requests / reserved / errors (timeout, 5xx) / 4xx | {herd['requests']} / {herd['ok']} / {herd['errors']} / {herd['refused4xx']} | {metered['requests']} / {metered['ok']} / {metered['errors']} / {metered['refused4xx']} |
| latency p50 / p90 / p99 / max (ms) | {ms(herd['latencyMs'].get('p50'))} / {ms(herd['latencyMs'].get('p90'))} / {ms(herd['latencyMs'].get('p99'))} / {ms(herd['latencyMs'].get('max'))} | {ms(metered['latencyMs'].get('p50'))} / {ms(metered['latencyMs'].get('p90'))} / {ms(metered['latencyMs'].get('p99'))} / {ms(metered['latencyMs'].get('max'))} |
| throughput (reservations/s) | {herd['okPerSecond']:.0f} | {metered['okPerSecond']:.0f} |
| run length (s) | {herd['runSeconds']:.1f} | {metered['runSeconds']:.1f} |
| most requests inside the service at once | {herd['seatServiceInFlightMax']} | {metered['seatServiceInFlightMax']} |
| double-booked seats | {herd['doubleBookedSeats']} | {metered['doubleBookedSeats']} |

p99 herd / via waitroom = {seats['ratios']['p99']:.1f}× (target ≥ 10×). Load averages:
{'; '.join(loadavg)}.

## 3. Acceptance (`acceptance/`)
See `acceptance/README.md`.
"""
open(results / "README.md", "w").write(text)
