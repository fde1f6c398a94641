#!/usr/bin/env python3
"""Counts what the operator did in a kube-apiserver audit log, from line FIRST_LINE on (1-based).

  execs.py AUDIT_LOG FIRST_LINE           -> "count<TAB>pod<TAB>argv" per distinct pods/exec call
  execs.py AUDIT_LOG FIRST_LINE --deletes USER
                                          -> per pod, the response codes of USER's pod deletes;
                                             exits 1 unless each pod was deleted at most once
                                             (and tried at most twice)
  execs.py AUDIT_LOG FIRST_LINE --bounded USER
                                          -> exits 1 unless every pods/exec call of USER runs
                                             its argv under `timeout -k 5 N` (bounded in the pod)
Each request is counted once (by auditID)."""
import json
import sys
from urllib.parse import parse_qs, urlsplit


def events(path, first):
    seen = set()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if n < first:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("auditID") in seen:
                continue
            seen.add(ev.get("auditID"))
            yield ev, ev.get("objectRef") or {}


def execs(path, first):
    counts = {}
    for ev, ref in events(path, first):
        if ref.get("subresource") != "exec":
            continue
        argv = " ".join(parse_qs(urlsplit(ev["requestURI"]).query).get("command", []))
        key = (ref.get("name", "?"), argv)
        counts[key] = counts.get(key, 0) + 1
    for (pod, argv), c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{c}\t{pod}\t{argv}")


def bounded(path, first, user):
    calls, loose = 0, []
    for ev, ref in events(path, first):
        if ref.get("subresource") != "exec" or ev.get("user", {}).get("username") != user:
            continue
        calls += 1
        argv = parse_qs(urlsplit(ev["requestURI"]).query).get("command", [])
        if argv[:3] != ["timeout", "-k", "5"] or not argv[3:4] or not argv[3].isdigit():
            loose.append(" ".join(argv))
    print(f"# exec calls by the operator: {calls}, not bounded in the pod: {len(loose)}", loose[:5])
    return calls > 0 and not loose


def deletes(path, first, user):
    per_pod = {}
    for ev, ref in events(path, first):
        if (ev.get("verb") == "delete" and ref.get("resource") == "pods"
                and not ref.get("subresource")
                and ev.get("user", {}).get("username") == user):
            code = (ev.get("responseStatus") or {}).get("code")
            per_pod.setdefault(ref.get("name"), []).append(code)
    print("# pod deletes by the operator:", per_pod)
    # one that deleted a pod (200), at most one more refused by its UID precondition or gone
    return all(c.count(200) <= 1 and len(c) <= 2 for c in per_pod.values())


if __name__ == "__main__":
    log, first = sys.argv[1], int(sys.argv[2])
    if sys.argv[3:4] == ["--deletes"]:
        sys.exit(0 if deletes(log, first, sys.argv[4]) else 1)
    if sys.argv[3:4] == ["--bounded"]:
        sys.exit(0 if bounded(log, first, sys.argv[4]) else 1)
    execs(log, first)
