#!/usr/bin/env bash
# Writes the images the real node runs, as OCI archives, into OUT (no registry anywhere):
# the operator's (scripts/operator-image.py, from the release binary) and Dovecot 2.3.19 and
# 2.3.21 (scripts/dovecot-image.py, from Debian's packages). The Dovecot archives are cached
# outside the repository by the hash of their recipe; a second run only copies them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="${1:?OUT folder}"
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
log() { echo "build-images: $*" >&2; }
mkdir -p "$out" "$CACHE/images"
recipe="$(cat "$repo"/deploy/images/dovecot/* "$repo"/scripts/dovecot-image.py "$repo"/scripts/oci.py | sha256sum | cut -c1-16)"
for v in 2.3.19 2.3.21; do
  cached="$CACHE/images/dovecot-$v-$recipe.tar"
  if [[ ! -f "$cached" ]]; then
    log "building Dovecot $v (mmdebstrap; about a minute)"
    python3 "$repo/scripts/dovecot-image.py" build "$v" "$cached.tmp" >&2
    mv "$cached.tmp" "$cached"
  fi
  cp "$cached" "$out/dovecot-$v.tar"
done
(cd "$repo" && cargo build --release --locked --quiet -p dovecot-upgrade-operator)
python3 "$repo/scripts/operator-image.py" build "$repo/target/release/dovecot-upgrade-operator" "$out/operator.tar" >&2
ls "$out"
