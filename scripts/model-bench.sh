#!/usr/bin/env bash
# The model's bench: 10,000,000 random event sequences (or $1) through the real engine, one
# runner per core; prints sequences per second and the first violation (shrunk) if any.
set -euo pipefail
cd "$(dirname "$0")/.."
DBU_MODEL_CASES="${1:-10000000}" DBU_MODEL_SEED="${DBU_MODEL_SEED:-$(date +%s)}" \
  cargo test --profile model --locked --test model_based random_event_sequences_keep_every_promise -- --nocapture
