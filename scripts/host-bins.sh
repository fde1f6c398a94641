#!/usr/bin/env bash
# Prints a folder holding the debug builds of dovecot-upgrade-operator and kubectl-dbu, the
# binaries generate.sh, krew.sh check and the node suites run on the host side.
# $DBU_HOST_BINS names one already built (scripts/test.sh sets it to target/debug after its one
# `cargo test --no-run`, which builds both binaries for the integration tests); without it they
# are built here. Why: a plain `cargo build` resolves fewer features than the tests' build
# (dev-dependencies add tokio's test-util, chrono's clock and serde, dbu-core's fixtures), so it
# built 22 crates a second time, kube, hyper and tokio among them, and CI ran it in three places.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${DBU_HOST_BINS:-}" ]]; then
  for b in dovecot-upgrade-operator kubectl-dbu; do
    [[ -x "$DBU_HOST_BINS/$b" ]] || { echo "host-bins: DBU_HOST_BINS=$DBU_HOST_BINS has no $b" >&2; exit 1; }
  done
  echo "$DBU_HOST_BINS"
  exit 0
fi
cargo build --locked --quiet -p dovecot-upgrade-operator -p kubectl-dbu >&2
echo "$PWD/target/debug"
