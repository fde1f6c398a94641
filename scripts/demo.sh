#!/usr/bin/env bash
# With a cluster (KUBECONFIG set or in-cluster): run the operator against it.
# Without one: upgrade a real local Dovecot director and three backends through the operator's
# own engine, printing progress as `kubectl get dbu -w` would. Needs root (mount namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-tools.sh)"
cargo build --release --locked --quiet
if [[ -n "${KUBECONFIG:-}" || -n "${KUBERNETES_SERVICE_HOST:-}" ]]; then
  exec target/release/dovecot-upgrade-operator run "$@"
fi
exec target/release/dovecot-upgrade-operator demo "$@"
