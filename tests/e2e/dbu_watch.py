#!/usr/bin/env python3
"""Every change of one DBU, from a watch, and judgements over them.

  dbu_watch.py watch NS NAME OUT.jsonl   `kubectl get -w` of the DBU, each change stamped with the
                                         time it arrived; a watch the API server ends (an outage)
                                         is started again, and the gap is written down
  dbu_watch.py mark OUT.jsonl LABEL      a mark in the same file (the suite's own moments)
  dbu_watch.py judge OUT.jsonl FROM TO [--stall-reasons R,...]
                                         between marks FROM and TO (TO: "end" for the last change):
                                         every Stalled=True has one of these reasons and each of
                                         them is seen (none given: never Stalled=True), and the
                                         progress of one target revision never goes backwards

A sampler that polls once a second can miss a Stalled that lasts a moment; a watch sees every
change the API server stored (bar those during an outage, which are reported as gaps).
"""
import json
import subprocess
import sys
import time


def now():
    return round(time.time(), 3)


def write(out, row):
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def condition(obj, typ):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == typ:
            return c
    return {}


def summary(obj):
    st = obj.get("status") or {}
    stalled = condition(obj, "Stalled")
    return {
        "rv": obj.get("metadata", {}).get("resourceVersion"),
        "phase": st.get("phase"),
        "progress": st.get("progress"),
        "target": st.get("targetRevision"),
        "stalled": stalled.get("status") == "True",
        "reason": stalled.get("reason") if stalled.get("status") == "True" else
        condition(obj, "Reconciling").get("reason") or condition(obj, "Ready").get("reason"),
        "message": (stalled.get("message") or "")[:300] if stalled.get("status") == "True" else "",
        "current": st.get("current"),
        "step": st.get("step"),
    }


def watch(ns, name, out):
    decoder = json.JSONDecoder()
    while True:
        started = now()
        p = subprocess.Popen(
            ["kubectl", "-n", ns, "get", "dbu", name, "-w", "-o", "json", "--request-timeout=0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        buf = ""
        for line in p.stdout:
            buf += line
            while True:
                s = buf.lstrip()
                if not s:
                    buf = ""
                    break
                try:
                    obj, end = decoder.raw_decode(s)
                except json.JSONDecodeError:
                    break
                buf = s[end:]
                write(out, {"t": now(), **summary(obj)})
        p.wait()
        # the watch ended (API server away, or the DBU deleted): say so, and watch again
        write(out, {"t": now(), "gap": True, "since": started})
        time.sleep(0.5)


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def judge(path, start, stop, reasons):
    rows = load(path)
    marks = {r["mark"]: r["t"] for r in rows if "mark" in r}
    if start not in marks:
        return f"no mark {start!r} (marks: {sorted(marks)})"
    t0 = marks[start]
    t1 = float("inf") if stop == "end" else marks.get(stop)
    if t1 is None:
        return f"no mark {stop!r} (marks: {sorted(marks)})"
    changes = [r for r in rows if "rv" in r and t0 <= r["t"] <= t1]
    gaps = [r for r in rows if r.get("gap") and t0 <= r["t"] <= t1]
    if not changes:
        return f"no change of the DBU between {start} and {stop}"
    seen, problems = [], []
    last = {}
    for r in changes:
        if r["stalled"]:
            if r["reason"] not in seen:
                seen.append(r["reason"])
            if r["reason"] not in reasons:
                problems.append(f"t={r['t']}: Stalled=True {r['reason']}: {r['message']}")
        p, target = r.get("progress"), r.get("target")
        if p and "/" in p:
            done, total = (int(x) for x in p.split("/"))
            before = last.get((target, total))
            if before is not None and done < before:
                problems.append(f"t={r['t']}: progress of {target} went back from {before}/{total} to {p}")
            last[(target, total)] = max(done, before or 0)
    missing = [r for r in reasons if r not in seen]
    if missing:
        problems.append(f"never Stalled=True with {missing}")
    # a watch ends when the API server goes; it is started again every half second until it
    # comes back: one interval per outage, from the end of the last watch that saw something
    down, cur = [], None
    for r in gaps:
        if r["t"] - r["since"] > 2:  # this watch ran: the API server was there until it ended
            if cur:
                down.append(cur)
            cur = [r["t"], r["t"]]
        elif cur is None:
            cur = [r["since"], r["t"]]
        else:
            cur[1] = r["t"]
    if cur:
        down.append(cur)
    down = [d for d in down if d[1] - d[0] >= 1]
    print(f"{len(changes)} changes of the DBU between {start} and {stop}; stall reasons seen: {seen or 'none'}; "
          f"the watch was down {len(down)} times (no change can have been seen then):")
    for a, b in down[:10]:
        print(f"  {b - a:.1f} s from t={a:.1f}")
    return "\n".join(problems) or None


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "watch":
        watch(*args)
    elif cmd == "mark":
        write(args[0], {"t": now(), "mark": args[1]})
    elif cmd == "judge":
        reasons = []
        if "--stall-reasons" in args:
            i = args.index("--stall-reasons")
            reasons = [r for r in args[i + 1].split(",") if r]
            args = args[:i] + args[i + 2:]
        problem = judge(args[0], args[1], args[2], reasons)
        if problem:
            print(problem)
            sys.exit(1)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
