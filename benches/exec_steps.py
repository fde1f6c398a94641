#!/usr/bin/env python3
"""Attributes the operator's requests during a rollout to the step they served, for BENCHMARKS.md.

  exec_steps.py AUDIT_SLICE EVENTS_JSON SERVICE_ACCOUNT BACKENDS

AUDIT_SLICE: the API server's audit lines of the rollout; EVENTS_JSON: `kubectl get
events.events.k8s.io -o json` of the DBU. A request belongs to the step whose StepSucceeded
Event is the next one after it for the same backend (the operator publishes that Event after the
step's last command); one followed by a BackendStarted, or by nothing, is "between backends"
(the ring reads and choice of the next backend). Prints one JSON line: per step, the requests
per backend by kind, in the order the steps ran.
"""
import collections
import datetime
import json
import sys


def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def main():
    audit_path, events_path, sa, backends = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    timeline = []  # (time, reason, step, pod)
    for e in json.load(open(events_path))["items"]:
        if e.get("reason") not in ("BackendStarted", "StepSucceeded"):
            continue
        t = e.get("eventTime") or e.get("deprecatedFirstTimestamp") or e["metadata"]["creationTimestamp"]
        pod = (e.get("related") or {}).get("name", "")
        timeline.append((ts(t), e["reason"], e.get("action", ""), pod))
    timeline.sort()
    counts = collections.defaultdict(collections.Counter)
    order = []
    for line in open(audit_path):
        a = json.loads(line)
        if a.get("user", {}).get("username") != sa or a.get("stage") != "ResponseComplete":
            continue
        r = a.get("objectRef", {})
        kind = a["verb"] + " " + r.get("resource", "") + ("/" + r["subresource"] if r.get("subresource") else "")
        if kind.startswith("watch ") or kind.startswith("create events"):
            continue
        t = ts(a["requestReceivedTimestamp"])
        nxt = next((ev for ev in timeline if ev[0] >= t), None)
        step = nxt[2] if nxt and nxt[1] == "StepSucceeded" else "between backends"
        if step not in order:
            order.append(step)
        counts[step][kind] += 1
    out = {s: {k: round(v / backends, 2) for k, v in sorted(counts[s].items())} for s in order}
    print(json.dumps({"bench": "api_steps", "backends": backends, "steps": out}))


if __name__ == "__main__":
    main()
