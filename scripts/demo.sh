#!/usr/bin/env bash
# With a cluster (KUBECONFIG set or in-cluster): run the operator against it.
# Without one: upgrade a real local Dovecot director and three backends through the operator's
# own engine, printing progress as `kubectl get dbu -w` would. Needs root (mount namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-tools.sh)"
if [[ -n "${KUBECONFIG:-}" || -n "${KUBERNETES_SERVICE_HOST:-}" ]]; then
  cargo build --release --locked --quiet -p dovecot-upgrade-operator
  exec target/release/dovecot-upgrade-operator run "$@"
fi
# the demo lives in the lab crate (tests/lab): the operator binary ships none of it
cargo build --release --locked --quiet -p dbu-lab --bin dbu-lab-demo
exec target/release/dbu-lab-demo "$@"
