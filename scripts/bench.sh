#!/usr/bin/env bash
# Runs every benchmark and writes BENCHMARKS.md (needs root: the real-Dovecot rig and the local
# kubelet, the real node). BENCH_RUNS sets the repetitions of the rollout runs (default 3).
# `scripts/bench.sh drain` runs only the drain benchmark and replaces its section; `outage` the same
# for the API outage rounds on the real node; `cluster` for memory and API cost (sections 2, 3);
# `scale` for the large ring in the model's world (section 10).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-tools.sh)"
raw="$(mktemp)"
# kept when a step fails, with the failed suite's output: a rerun of one step then suffices
trap 'rc=$?; if ((rc == 0)); then rm -f "$raw"; else echo "bench: failed; measurements so far in $raw" >&2; fi' EXIT
# one benchmark alone: its rows through `report.py --MODE`, which replaces its sections of
# BENCHMARKS.md and keeps the rest; then those sections are shown
only() { # mode sed-range command...
  local mode="$1" show="$2"; shift 2
  "$@" | grep '^{' >> "$raw"
  python3 benches/report.py "$raw" "--$mode" BENCHMARKS.md > "$raw.md"
  mv "$raw.md" BENCHMARKS.md
  sed -n "$show" BENCHMARKS.md
  exit 0
}
runs="${BENCH_RUNS:-3}"
case "${1:-}" in
  drain)
    echo "bench: the drain on a realistic workload (Move and Wait, BENCH_RUNS each)" >&2
    only drain '/^## 7\./,$p' env BENCH_RUNS="$runs" cargo bench --locked --bench drain ;;
  scale)
    echo "bench: a large ring end to end (benches/scale.rs, BENCH_RUNS each)" >&2
    only scale '/^## 10\./,$p' env BENCH_RUNS="$runs" cargo bench --locked --bench scale ;;
  cluster)
    echo "bench: memory and API cost on the real node (benches/cluster.sh)" >&2
    only cluster '/^## 2\./,/^## 4\./p' benches/cluster.sh ;;
esac
outage() { # the e2e suite with OUTAGE_ROUNDS rollouts through three API outages each
  local suite_log; suite_log="$(mktemp)"
  MEASURE="$raw" OUTAGE_ROUNDS="${BENCH_RUNS:-5}" tests/e2e/e2e.sh > "$suite_log" ||
    { grep -E '^not ok' "$suite_log" >&2; echo "bench: e2e.sh failed; its output is in $suite_log" >&2; exit 1; }
  rm -f "$suite_log"
}
if [[ "${1:-}" == outage ]]; then
  # only the outage rounds: section 8 of BENCHMARKS.md is replaced, the rest kept
  echo "bench: API outages on the real node (tests/e2e/e2e.sh, BENCH_RUNS rounds, default 5)" >&2
  outage
  python3 benches/report.py "$raw" --outage BENCHMARKS.md > "$raw.md"
  mv "$raw.md" BENCHMARKS.md
  sed -n '/^## 8\./,$p' BENCHMARKS.md
  exit 0
fi
echo "bench: rollouts on the real-Dovecot rig (N=3, N=10, users)" >&2
BENCH_RUNS="${BENCH_RUNS:-3}" cargo bench --locked --bench rollout | grep '^{' >> "$raw"
echo "bench: the drain on a realistic workload (Move and Wait, BENCH_RUNS each)" >&2
BENCH_RUNS="${BENCH_RUNS:-3}" cargo bench --locked --bench drain | grep '^{' >> "$raw"
echo "bench: reconcile latency and status size (3 runs)" >&2
for _ in 1 2 3; do cargo bench --locked --bench reconcile | grep '^{' >> "$raw"; done
echo "bench: memory and API cost on the real control plane" >&2
benches/cluster.sh | grep '^{' >> "$raw"
echo "bench: a real version upgrade on the real node (tests/e2e/real-node.sh)" >&2
suite_log="$(mktemp)"
MEASURE="$raw" tests/e2e/real-node.sh > "$suite_log" || { grep -E '^not ok' "$suite_log" >&2; echo "bench: real-node.sh failed; its output is in $suite_log" >&2; exit 1; }
rm -f "$suite_log"
echo "bench: API outages on the real node (tests/e2e/e2e.sh, BENCH_RUNS rounds, default 5)" >&2
outage
python3 benches/report.py "$raw" > "$raw.md"
mv "$raw.md" BENCHMARKS.md
echo "bench: a large ring end to end (benches/scale.rs, BENCH_RUNS each)" >&2
BENCH_RUNS="${BENCH_RUNS:-3}" cargo bench --locked --bench scale | grep '^{' > "$raw"
python3 benches/report.py "$raw" --scale BENCHMARKS.md > "$raw.md"
mv "$raw.md" BENCHMARKS.md
cat BENCHMARKS.md
