#!/usr/bin/env bash
# A turn as a person sees it, in a real browser: headless Chromium on the waiting page, next in
# line behind one ACTIVE session in a room of capacity 1 whose heartbeats are a minute apart (so
# only the page's held read can learn of the turn in time). The session ahead completes; the
# test notes when the page shows "It's your turn" and when the room's target (a seat selection
# that verifies the token) receives the page's request, both from the `:complete` that freed the
# slot. TURNS turns, each in a room of its own, one node (embedded log, release build): the test
# `next_in_line_the_page_learns_of_its_turn_the_moment_it_comes` of crates/waitroom/tests/browser.rs
# with TURN_SAMPLES=TURNS. Writes its output and the percentiles to OUT/run.txt.
#
#   bench/turn-browser.sh                     # 50 turns, into bench/results/<UTC date>/turn-browser
#   TURNS=100 bench/turn-browser.sh
#
# Needs chromium and chromedriver (Debian's `chromium`, `chromium-driver`).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
TURNS="${TURNS:-50}"
out="${OUT:-bench/results/$(date -u +%Y-%m-%d)/turn-browser}"
mkdir -p "$out"

[ -n "${NO_BUILD:-}" ] || cargo test --release --quiet -p waitroom --test browser --no-run
{
  echo "# bench/turn-browser.sh: $TURNS turns in headless Chromium, one embedded node (release build)"
  echo "# $(git rev-parse --short HEAD)$([ -z "$(git status --porcelain -- . ':!bench/results')" ] || echo ' + uncommitted changes'); on $(bench_machine)"
  echo "# load average before: $(bench_loadavg)"
  TURN_SAMPLES="$TURNS" cargo test --release --quiet -p waitroom --test browser \
    next_in_line_the_page_learns_of_its_turn_the_moment_it_comes -- --nocapture 2>&1 |
    grep -E "^(turn shown|target reached)|test result"
  echo "# load average after: $(bench_loadavg)"
} | tee "$out/run.txt"
grep -q "^target reached: $TURNS turns" "$out/run.txt" || { echo "the test did not report $TURNS turns" >&2; exit 1; }
