#!/usr/bin/env bash
# Builds the operator's image from deploy/images/operator/Containerfile with buildah (daemonless,
# from Debian), as a user's `docker build` would, and writes it as an OCI archive for the real node.
#   scripts/image.sh operator OUT.tar [TREE [VERSION]]   build TREE's operator (default: this
#                                                        checkout) with this Containerfile
#                                                        (IMAGE_TARGET: cargo's target folder)
#   scripts/image.sh check OUT.tar                        what the image must be, and that it starts
#   scripts/image.sh dovecot VERSION OUT.tar              deploy/images/dovecot/Containerfile for
#                                                        Dovecot 2.3.19 (bookworm) or 2.3.21
#                                                        (bookworm-backports), as dbu-dovecot:VERSION
#   scripts/image.sh static BINARY NAME USER OUT.tar      one static binary as the image (the real
#                                                        node's pause and CoreDNS)
#   scripts/image.sh build-args                           the bases made, then the arguments that
#                                                        let `buildah build` of the operator's
#                                                        Containerfile run here (one per line)
# No registry can be pulled from here, so the two base images are built locally with mmdebstrap
# from Debian 12's packages and passed as BUILD_IMAGE and BASE_IMAGE; each is named by the hash
# of its recipe (this file) and kept in buildah's storage. The build stage runs cargo with the
# host's toolchain and registry mounted (~/.rustup, ~/.cargo) and its target folder in a cache.
# Prints the image's digest on stdout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${DBU_CACHE:-$HOME/.cache/dovecot-upgrade-operator}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CONTAINERFILE="$repo/deploy/images/operator/Containerfile"
recipe="$(sed -n '/^# --- base recipes/,/^# --- end/p' "$0" | sha256sum | cut -c1-12)"
BUILD_IMAGE="localhost/dbu-base/rust-build:bookworm-$recipe"
BASE_IMAGE="localhost/dbu-base/cc:bookworm-$recipe"
DEBIAN_IMAGE="localhost/dbu-base/debian:bookworm-$recipe"
log() { echo "image: $*" >&2; }
app_version() { awk -F'"' '/^appVersion:/ {print $2}' "$1/charts/dovecot-upgrade-operator/Chart.yaml"; }
# the chart's default image, which containerd's import names the image by
chart_image() { echo "docker.io/library/$(awk '/^  repository:/ {print $2; exit}' "$repo/charts/dovecot-upgrade-operator/values.yaml"):$1"; }
have() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# --- base recipes (their hash names the images)
# the build stage's image: a compiler and C library for cargo; cargo and rustup themselves come
# mounted from the host at the official rust image's paths
build_base() {
  local tar; tar="$(mktemp -d)/root.tar"
  mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,ca-certificates \
    --aptopt='Apt::Install-Recommends "false"' bookworm "$tar" "$MIRROR"
  local c; c="$(buildah from scratch)"
  buildah add --quiet "$c" "$tar" / >/dev/null
  buildah config --env CARGO_HOME=/usr/local/cargo --env RUSTUP_HOME=/usr/local/rustup \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  buildah commit --quiet --rm "$c" "$BUILD_IMAGE" >/dev/null
  rm -rf "$(dirname "$tar")"
}
# the runtime base, as distroless cc-debian12:nonroot is made: Debian 12's glibc, libgcc_s and
# libssl unpacked without maintainer scripts; the CA bundle made from ca-certificates' files, then
# every program dropped (no shell, no package manager); user nonroot (65532)
runtime_base() {
  local tar; tar="$(mktemp -d)/root.tar"
  mmdebstrap --quiet --variant=extract --include=base-files,netbase,libc6,libgcc-s1,ca-certificates \
    --extract-hook='cat "$1"/usr/share/ca-certificates/mozilla/*.crt > "$1"/etc/ssl/certs/ca-certificates.crt' \
    --extract-hook='printf "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" > "$1"/etc/passwd' \
    --extract-hook='printf "root:x:0:\nnonroot:x:65532:\n" > "$1"/etc/group' \
    --extract-hook='mkdir -p "$1"/home/nonroot "$1"/tmp && chown 65532:65532 "$1"/home/nonroot && chmod 1777 "$1"/tmp' \
    --extract-hook='rm -rf "$1"/usr/bin/* "$1"/usr/sbin/* "$1"/usr/share/debconf "$1"/usr/share/perl5 "$1"/usr/share/bash-completion "$1"/usr/share/ca-certificates' \
    --extract-hook='rm -rf "$1"/usr/share/doc "$1"/usr/share/man "$1"/usr/share/info "$1"/usr/share/lintian "$1"/var/lib/dpkg "$1"/var/cache/* "$1"/var/log/*' \
    bookworm "$tar" "$MIRROR"
  local c; c="$(buildah from scratch)"
  buildah add --quiet "$c" "$tar" / >/dev/null
  buildah config --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/bin:/usr/bin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$c"
  buildah commit --quiet --rm "$c" "$BASE_IMAGE" >/dev/null
  rm -rf "$(dirname "$tar")"
}
# Debian 12 minbase, as debian:bookworm-slim is made, for the Dovecot image
debian_base() {
  local tar; tar="$(mktemp -d)/root.tar"
  mmdebstrap --quiet --variant=minbase --aptopt='Apt::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$tar" "$MIRROR"
  local c; c="$(buildah from scratch)"
  buildah add --quiet "$c" "$tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash "$c"
  buildah commit --quiet --rm "$c" "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$(dirname "$tar")"
}
# --- end

bases() {
  # bases of other recipes go
  buildah images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/dbu-base/' | grep -v -- "-$recipe\$" |
    xargs -r buildah rmi >/dev/null 2>&1 || true
  have "$BUILD_IMAGE" || { log "making $BUILD_IMAGE (mmdebstrap)"; build_base; }
  have "$BASE_IMAGE" || { log "making $BASE_IMAGE (mmdebstrap)"; runtime_base; }
  have "$DEBIAN_IMAGE" || { log "making $DEBIAN_IMAGE (mmdebstrap)"; debian_base; }
}

dovecot() { # version out.tar
  local version="$1" out="$2" suite
  case "$version" in
    2.3.19) suite=bookworm ;;
    2.3.21) suite=bookworm-backports ;;
    *) log "unknown Dovecot version $version: 2.3.19 or 2.3.21"; exit 2 ;;
  esac
  local name="docker.io/library/dbu-dovecot:$version"
  bases
  log "buildah build of $name ($suite)"
  # RUN reaches Debian's mirror through the host's network, as apt on the host does
  buildah build --quiet --layers=false --pull=never --network host \
    --build-arg BASE_IMAGE="$DEBIAN_IMAGE" --build-arg SUITE="$suite" \
    -f "$repo/deploy/images/dovecot/Containerfile" -t "$name" "$repo/deploy/images/dovecot" >/dev/null
  # the suite must give the version asked for
  local c got; c="$(buildah from --quiet --pull=never "$name")"
  got="$(buildah run "$c" -- dovecot --version)"; buildah rm "$c" >/dev/null
  [[ "$got" == "$version".* ]] || { log "$suite gave Dovecot $got, not $version"; exit 1; }
  rm -f "$out"
  buildah push --quiet "$name" "oci-archive:$out:$name"
  log "$out: $name, Dovecot $got"
}

static() { # binary name user out.tar: the binary as /<its name>, its entrypoint
  local bin="$1" name="$2" user="$3" out="$4" c
  c="$(buildah from scratch)"
  buildah copy --quiet --chmod 0755 "$c" "$bin" "/$(basename "$bin")" >/dev/null
  buildah config --entrypoint "[\"/$(basename "$bin")\"]" --workingdir / ${user:+--user "$user"} "$c"
  # committed straight into the archive, under NAME: nothing is kept in buildah's storage.
  # Nodes side by side make the same image at once; committed into storage, two commits in the
  # same second made the same image ID and the second failed ("creating image"), and one's rmi
  # took the other's image
  rm -f "$out"
  buildah commit --quiet --rm "$c" "oci-archive:$out:$name" >/dev/null
}

operator() { # out.tar [tree [version]]
  local out="$1" tree="${2:-$repo}" version="${3:-}"
  version="${version:-$(app_version "$tree")}"
  local name; name="$(chart_image "$version")"
  bases
  local target="${IMAGE_TARGET:-$CACHE/image-target}"
  mkdir -p "$target" "$HOME/.cargo"
  log "buildah build of $name from $tree"
  # the image this build takes the name from, untagged by it (one per run piled up in buildah's
  # storage, 39 of them on the author's machine): removed once the build has the name
  local replaced; replaced="$(buildah inspect --type image --format '{{.FromImageID}}' "$name" 2>/dev/null || true)"
  # the target folder in a cache volume: the next build compiles only what changed
  buildah build --quiet --layers=false --pull=never \
    --build-arg BUILD_IMAGE="$BUILD_IMAGE" --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VERSION="$version" \
    --volume "$HOME/.rustup:/usr/local/rustup:ro" --volume "$HOME/.cargo:/usr/local/cargo" \
    --volume "$target:/src/target" \
    -f "$CONTAINERFILE" -t "$name" "$tree" >/dev/null
  if [[ -n "$replaced" && "$replaced" != "$(buildah inspect --type image --format '{{.FromImageID}}' "$name")" ]]; then
    buildah rmi "$replaced" >/dev/null 2>&1 || true
  fi
  rm -f "$out"
  local digest; digest="$(mktemp)"
  buildah push --quiet --digestfile "$digest" "$name" "oci-archive:$out:$name"
  log "$out: $name $(cat "$digest")"
  cat "$digest"; echo
  rm -f "$digest"
}

check() { # out.tar: what the image must be, read back from the archive as containerd would take it
  local archive="$1" version name failures=0
  version="$(app_version "$repo")"; name="$(chart_image "$version")"
  ok() { if eval "$2"; then echo "ok   - $1"; else echo "FAIL - $1"; failures=$((failures + 1)); fi; }
  local img="localhost/dbu-check:$$"
  buildah pull --quiet "oci-archive:$archive" >/dev/null
  buildah tag "$name" "$img"
  local cfg; cfg="$(buildah inspect --type image "$img")"
  jq() { /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1" <<< "$cfg"; }
  ok "named as the chart's default image ($name)" \
    "tar -xOf '$archive' index.json | grep -q '\"org.opencontainers.image.ref.name\":\"$name\"'"
  ok "non-root user 65532" "[[ \"\$(jq 'd[\"OCIv1\"][\"config\"][\"User\"]')\" == 65532:65532 ]]"
  ok "entrypoint is the operator" "[[ \"\$(jq 'd[\"OCIv1\"][\"config\"][\"Entrypoint\"]')\" == \"['/usr/local/bin/dovecot-upgrade-operator']\" ]]"
  ok "labelled with the chart's appVersion ($version)" \
    "[[ \"\$(jq 'd[\"OCIv1\"][\"config\"][\"Labels\"][\"org.opencontainers.image.version\"]')\" == '$version' ]]"
  ok "one malloc arena (MALLOC_ARENA_MAX=1)" "jq 'd[\"OCIv1\"][\"config\"][\"Env\"]' | grep -q \"'MALLOC_ARENA_MAX=1'\""
  local c root; c="$(buildah from --quiet --pull=never "$img")"; root="$(buildah mount "$c")"
  ok "no shell, no programs but the operator" "[[ -z \"\$(find '$root/bin/' '$root/sbin/' '$root/usr/bin/' '$root/usr/sbin/' -mindepth 1 2>/dev/null)\" ]]"
  ok "CA certificates" "grep -q 'BEGIN CERTIFICATE' '$root/etc/ssl/certs/ca-certificates.crt'"
  buildah umount "$c" >/dev/null
  local said; said="$(buildah run --user 65532:65532 "$c" -- /usr/local/bin/dovecot-upgrade-operator --version 2>&1 || true)"
  ok "starts in its own root as 65532: $said" "[[ '$said' == 'dovecot-upgrade-operator $version' ]]"
  buildah rm "$c" >/dev/null; buildah rmi "$img" >/dev/null
  echo "$failures failed"
  ((failures == 0))
}

case "${1:-}" in
  operator) shift; operator "$@" ;;
  check) check "${2:?check OUT.tar}" ;;
  dovecot) dovecot "${2:?dovecot VERSION OUT.tar}" "${3:?dovecot VERSION OUT.tar}" ;;
  static) static "${2:?static BINARY NAME USER OUT.tar}" "${3:?}" "${4-}" "${5:?}" ;;
  bases) bases ;;
  # what names the bases: the build recipes' hash (for caches of what is built on them)
  recipe) echo "$recipe" ;;
  build-args)
    bases
    mkdir -p "${IMAGE_TARGET:-$CACHE/image-target}" "$HOME/.cargo"
    printf '%s\n' --pull=never --build-arg "BUILD_IMAGE=$BUILD_IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
      --volume "$HOME/.rustup:/usr/local/rustup:ro" --volume "$HOME/.cargo:/usr/local/cargo" \
      --volume "${IMAGE_TARGET:-$CACHE/image-target}:/src/target"
    ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
