#!/usr/bin/env bash
# The long form of the randomized fault soak on real Dovecot (the lab): 100 rollouts in a row
# (or $1) with live IMAP and LMTP traffic and 1-5 random faults each, seeded (DBU_SOAK_SEED, the
# date by default; printed, so that a failure can be repeated). Needs root (the lab's network
# and mount namespaces) and Dovecot (scripts/install-tools.sh installs it). A run that passes
# rewrites section 9 of BENCHMARKS.md from its report line.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
DBU_SOAK_ROLLOUTS="${1:-100}" DBU_SOAK_SEED="${DBU_SOAK_SEED:-$(date +%Y%m%d)}" \
  cargo test --release --locked --test fault_soak -- --nocapture 2>&1 |
  grep --line-buffered -E "^(soak rollout|SCENARIO|fault soak|test |thread|seed)" | tee "$log"
if grep -q "^SCENARIO | fault soak.* | pass |" "$log"; then
  python3 benches/report.py "$log" --soak BENCHMARKS.md > "$log.md"
  mv "$log.md" BENCHMARKS.md
  sed -n '/^## 9\./,$p' BENCHMARKS.md
else
  echo "fault-soak: the soak failed; its report is in $log" >&2
  exit 1
fi
rm -f "$log"
