#!/usr/bin/env python3
"""Counts pods/exec calls in a kube-apiserver audit log, per pod and argv.

Usage: execs.py AUDIT_LOG FIRST_LINE  -> one "count<TAB>pod<TAB>argv" line per distinct call,
from line FIRST_LINE on (1-based). Each exec is counted once (by auditID)."""
import json
import sys
from urllib.parse import parse_qs, urlsplit

counts, seen = {}, set()
with open(sys.argv[1]) as f:
    for n, line in enumerate(f, 1):
        if n < int(sys.argv[2]):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        ref = ev.get("objectRef") or {}
        if ref.get("subresource") != "exec" or ev.get("auditID") in seen:
            continue
        seen.add(ev.get("auditID"))
        argv = " ".join(parse_qs(urlsplit(ev["requestURI"]).query).get("command", []))
        key = (ref.get("name", "?"), argv)
        counts[key] = counts.get(key, 0) + 1
for (pod, argv), c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
    print(f"{c}\t{pod}\t{argv}")
