#!/usr/bin/env bash
# Every check CI runs: formatting, lints, generated artifacts, chart, unit, glue and real-Dovecot tests.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-tools.sh)"

step() { echo; echo "==> $*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "generated artifacts match the code"
scripts/generate.sh --check

step "helm lint"
helm lint charts/dovecot-upgrade-operator
helm lint charts/dovecot-upgrade-operator --set clusterWide=true

step "cargo test"
# the real-Dovecot tests start their own director and backends on 127.0.N.0/24 (root needed)
cargo test --locked --all-targets -- --test-threads 2 --show-output

step "end-to-end on a real control plane (built from Go sources on first use, then cached)"
tests/e2e/e2e.sh
