# Shared by tests/e2e/e2e.sh, tests/e2e/real-node.sh and benches/cluster.sh: the steps that set up the example mail system
# on the harness. Expects $NS, $state and $here (tests/e2e) to be set, and KUBECONFIG exported.

# the operator's kubeconfig, on a TokenRequest token of the chart's ServiceAccount
operator_kubeconfig() {
  local token server
  token="$(kubectl -n "$NS" create token dbu --duration=1h)"
  server="$(kubectl config view -o jsonpath='{.clusters[0].cluster.server}')"
  cat > "$state/operator.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
  - name: e2e
    cluster: {server: "$server", certificate-authority: "${PKI:-$state/pki}/ca.crt"}
users:
  - name: operator
    user: {token: "$token"}
contexts:
  - name: e2e
    context: {cluster: e2e, user: operator, namespace: $NS}
current-context: e2e
KC
}

ready_pods() { # the StatefulSet controller creates backends one by one: wait for all five
  for _ in $(seq 240); do
    [[ "$(kubectl -n "$NS" get pods -l 'app in (dovecot-backend,dovecot-director)' \
      -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" == 5 ]] && return 0
    sleep 0.5
  done
  kubectl -n "$NS" get pods
  return 1
}
ring_synced() {
  for _ in $(seq 60); do
    kubectl -n "$NS" exec director-0 -- doveadm director ring status 2>/dev/null | grep -q "ring synced" && return 0
    sleep 1
  done
  return 1
}
pod_ip() { kubectl -n "$NS" get pod "$1" -o jsonpath='{.status.podIP}'; }
declare -A VHOSTS=([backend-0]=100 [backend-1]=50 [backend-2]=20)   # by pod: a replaced pod has a new IP
set_vhosts() { for p in "${!VHOSTS[@]}"; do kubectl -n "$NS" exec director-0 -- doveadm director update "$(pod_ip "$p")" "${VHOSTS[$p]}" || return 1; done; }
deliver_all() { local d; d="$(pod_ip director-0)"; for u in 1 2 3 4 5 6; do python3 "$here/mail.py" deliver "$d" "user$u" 3 || return 1; done; }
roll_config() { # greeting revision: a config change plus the template bump that makes a new revision
  local conf
  conf="$(kubectl -n "$NS" get cm backend-config -o jsonpath='{.data.dovecot\.conf}' | sed '/^login_greeting = /d' | sed "1i login_greeting = $1")"
  kubectl -n "$NS" create cm backend-config --from-literal=dovecot.conf="$conf" \
    --dry-run=client -o yaml | kubectl apply -f - &&
    kubectl -n "$NS" patch sts backend --type merge \
      -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"mailops.io/config-revision\":\"$2\"}}}}}"
}
target_rev() { kubectl -n "$NS" get sts backend -o jsonpath='{.status.updateRevision}'; }
rollout_dbu_yaml() { # the example DBU, with the e2e's verify user and a short drain
  sed -e 's/upgrade-probe@example.org/user1/' -e 's/timeout: 15m .*/timeout: 20s/' -e 's/pollInterval: 5s/pollInterval: 1s/' \
    deploy/examples/dbu.yaml
}
rollout_dbu() { rollout_dbu_yaml | kubectl apply -f -; }
