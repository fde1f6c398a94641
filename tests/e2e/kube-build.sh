# Sourced by build-control-plane.sh and build-node.sh (with $here set): the Kubernetes version the
# wrapper module kube/ requires, and the link flags that stamp it into what is built from it
# (unstamped binaries say v0.0.0-master, and Helm refuses charts with a kubeVersion constraint).
KUBE_VERSION="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {sub(/^v/,"",$3); print $3}' "$here/kube/go.mod")"
kube_ldflags() {
  local minor="${KUBE_VERSION#*.}" p flags="-s -w"
  minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  echo "$flags"
}
