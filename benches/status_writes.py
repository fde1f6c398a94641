#!/usr/bin/env python3
"""Sorts a DBU's status writes during a rollout into step transitions and the rest, for BENCHMARKS.md.

  status_writes.py WATCH_JSON

WATCH_JSON: the output of `kubectl get dbu NAME -w -o json` while the rollout ran (one object per
change the API server sent). Each operator write bumps `status.writeSeq`; a write is a step
transition when a backend's record was added or its step changed, else it is named by the
Reconciling condition's reason it wrote (a wait whose message changed, a slot, a count). Prints
one JSON line: writes, transitions, and the other writes by reason.
"""
import collections
import json
import sys


def objects(text):
    dec = json.JSONDecoder()
    i = 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return
        obj, i = dec.raw_decode(text, i)
        yield obj


def reconciling(status):
    for c in status.get("conditions", []):
        if c.get("type") == "Reconciling":
            return c.get("status"), c.get("reason", "")
    return None, ""


def main():
    seen = {}
    for obj in objects(open(sys.argv[1]).read()):
        st = obj.get("status") or {}
        seq = st.get("writeSeq")
        if seq is not None:
            seen[seq] = st
    writes = [seen[k] for k in sorted(seen)]
    transitions = 0
    other = collections.Counter()
    prev = None
    for st in writes:
        steps = {b["pod"]: b.get("step") for b in st.get("backends", [])}
        before = {b["pod"]: b.get("step") for b in (prev or {}).get("backends", [])}
        if prev is not None and any(before.get(p) != s for p, s in steps.items()):
            transitions += 1
        elif prev is not None:
            status, reason = reconciling(st)
            other[f"{reason or 'no reason'} ({'Reconciling' if status == 'True' else 'done'})"] += 1
        prev = st
    # the first write seen is the one before the rollout began (or its start)
    print(json.dumps({
        "bench": "status_writes",
        "writes": max(len(writes) - 1, 0),
        "transitions": transitions,
        "other": dict(other.most_common()),
    }))


if __name__ == "__main__":
    main()
