"""Each backend's walk as the DBU's Events tell it (events.k8s.io JSON): real-node.sh's drain checks and its measurements read it."""
import collections
import datetime
import json


def at(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def when(e):
    return at(e.get("eventTime") or e.get("deprecatedLastTimestamp") or e["metadata"]["creationTimestamp"])


def per_backend(path, since=None, until=None):
    """By pod: `starts` (how many BackendStarted), `start` and `why` (the last one's time and
    text), `drained` (WaitSessions done) and `end` (BackendUpgraded), of the Events between
    `since` and `until` (datetimes; None: no bound)."""
    per = collections.defaultdict(dict)
    for e in sorted(json.load(open(path))["items"], key=when):
        t = when(e)
        if (since and t < since) or (until and t > until):
            continue
        pod, _, rest = (e.get("note") or "").partition(": ")
        if e["reason"] == "BackendStarted":
            per[pod]["starts"] = per[pod].get("starts", 0) + (e.get("deprecatedCount") or 1)
            per[pod]["start"], per[pod]["why"] = t, rest
        elif e["reason"] == "StepSucceeded" and rest.startswith("WaitSessions"):
            per[pod]["drained"] = t
        elif e["reason"] == "BackendUpgraded":
            per[pod]["end"] = t
    return per
