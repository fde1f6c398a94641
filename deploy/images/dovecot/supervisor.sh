#!/bin/sh
# PID 1 of a Dovecot container: starts Dovecot and stays alive whether or not it runs, so the
# operator can `doveadm stop` by exec and reset caches in the same pod before replacing it.
# On SIGTERM (pod deletion) it stops Dovecot, waits for its master to exit, and exits 0.
# Orphans re-parented to PID 1 are reaped by the `wait` below.
#   DOVECOT_CONFIG   the config file (default /etc/dovecot/dovecot.conf)
#   POD_IP           written as `listen = ...` to /etc/dovecot/local/listen.conf
#   MAIL_DIRS        folders handed to the mail user before Dovecot starts (volumes arrive root-owned)
set -u
conf="${DOVECOT_CONFIG:-/etc/dovecot/dovecot.conf}"
mkdir -p /etc/dovecot/local
echo "listen = ${POD_IP:-*}" > /etc/dovecot/local/listen.conf
for d in ${MAIL_DIRS:-}; do chown mail:mail "$d"; done
base_dir="$(doveconf -c "$conf" -h base_dir)"

stop() {
  doveadm -c "$conf" stop 2>/dev/null
  # doveadm stop returns once the signal is sent; the master exits after its children
  pid="$(cat "$base_dir/master.pid" 2>/dev/null)"
  while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  # the kubelet keeps this as the container's termination message
  echo "supervisor: SIGTERM: Dovecot stopped" | tee /dev/termination-log 2>/dev/null
  exit 0
}
trap stop TERM INT

echo "supervisor: starting $(dovecot --version)"
dovecot -c "$conf" || echo "supervisor: dovecot did not start (exit $?); staying up for the operator" >&2
while :; do
  sleep 3600 &
  wait $!
done
