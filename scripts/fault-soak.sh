#!/usr/bin/env bash
# The long form of the randomized fault soak on real Dovecot (the lab): 100 rollouts in a row
# (or $1) with live IMAP and LMTP traffic and 1-5 random faults each, seeded (DBU_SOAK_SEED, the
# date by default; printed, so that a failure can be repeated). Needs root (the lab's network
# and mount namespaces) and Dovecot (scripts/install-tools.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
DBU_SOAK_ROLLOUTS="${1:-100}" DBU_SOAK_SEED="${DBU_SOAK_SEED:-$(date +%Y%m%d)}" \
  cargo test --release --locked --test fault_soak -- --nocapture 2>&1 | grep -E "^(soak rollout|SCENARIO|fault soak|test |thread|seed)"
