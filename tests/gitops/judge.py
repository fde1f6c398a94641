#!/usr/bin/env python3
"""Judges DovecotBackendUpgrade objects as Argo CD and Flux do: Argo CD's own Lua engine
(`argocd admin settings resource-overrides health` with the shipped argocd-cm patch) and Flux's
kstatus library (tests/gitops/tools/kstatus), and checks each against the mapping the README promises.

  judge.py fixtures ARGOCD KSTATUS          the states below, shaped as the operator writes them
  judge.py actions ARGOCD                   the shipped Argo CD actions: which are offered in
                                            which state, and the spec or annotation each changes
  judge.py act ARGOCD ACTION FILE           prints, as JSON, the object the shipped action leaves
                                            of the one in FILE (for applying it back)
  judge.py live ARGOCD KSTATUS DIR          DIR/<state>.json: objects as `kubectl get -o json`
                                            returned them; <state> is a key of EXPECT

Exit status 1 when any verdict differs.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATCH = os.path.join(ROOT, "charts/dovecot-upgrade-operator/argocd/argocd-cm-patch.yaml")

# state -> (Argo CD health, a fragment of its message, kstatus status)
EXPECT = {
    "no-status": ("Progressing", "Waiting for the operator", "Current"),
    "initializing": ("Progressing", "seen by the operator", "InProgress"),
    "older-generation": ("Progressing", "observe generation", "InProgress"),
    "revision-pending": ("Progressing", "mailops.io/revision", "InProgress"),
    "progressing": ("Progressing", "", "InProgress"),
    "stalled": ("Degraded", "failed at step", "Failed"),
    "invalid-spec": ("Degraded", "spec.", "Failed"),
    "aborted": ("Degraded", "abort", "Failed"),
    "complete": ("Healthy", "run revision", "Current"),
    "complete-paused": ("Healthy", "(paused)", "Current"),
    "paused": ("Suspended", "", "InProgress"),
    "awaiting-approval": ("Suspended", "approve", "InProgress"),
    "held": ("Suspended", "", "InProgress"),
    "outside-window": ("Suspended", "", "InProgress"),
    "dry-run": ("Suspended", "would be upgraded", "InProgress"),
    # Argo CD judges deletion itself, before any health script
    "deleting": ("Progressing", "Pending deletion", "Terminating"),
    # the DovecotRing (ring-health.lua)
    "ring-no-status": ("Progressing", "Waiting for the operator", "Current"),
    "ring-older-generation": ("Progressing", "observe generation", "InProgress"),
    "ring-no-director": ("Progressing", "no Ready director", "InProgress"),
    "ring-synced": ("Healthy", "directors agree", "Current"),
    "ring-split": ("Degraded", "disagree", "Failed"),
    "ring-conflict": ("Degraded", "one director ring", "Failed"),
}


def cond(type_, status, reason, message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-01T10:00:00Z"}


def conds(ready, reconciling, stalled, reason, message):
    return [cond("Ready", ready, reason, message), cond("Reconciling", reconciling, reason, message),
            cond("Stalled", stalled, reason, message if stalled == "True" else "")]


def dbu(generation, status=None, spec=None, meta=None):
    m = {"name": "backend-rollout", "namespace": "mail", "generation": generation}
    m.update(meta or {})
    o = {"apiVersion": "mailops.io/v1alpha1", "kind": "DovecotBackendUpgrade", "metadata": m,
         "spec": {"backends": {"statefulSet": "backend"}, **(spec or {})}}
    if status is not None:
        o["status"] = status
    return o


def st(gen, phase, progress, c):
    return {"observedGeneration": gen, "phase": phase, "progress": progress, "conditions": c}


def fixtures():
    """The states, shaped like the operator's status (the live run checks the real ones)."""
    wait = lambda reason, msg: conds("False", "True", "False", reason, msg)
    hold = lambda reason, msg: conds("False", "False", "False", reason, msg)
    done = st(2, "Completed", "3/3", conds("True", "False", "False", "UpgradeComplete",
                                          "all backends (3/3) run revision backend-7d9"))
    return {
        "no-status": dbu(1),
        "initializing": dbu(1, st(1, "Pending", None, wait(
            "Initializing", "seen by the operator; reading the StatefulSet, its pods and the director ring"))),
        "older-generation": dbu(3, done),
        "revision-pending": dbu(2, st(2, "Pending", "0/3", wait("WaitingForRevision",
            'spec.revision is "2.3.21"; waiting for StatefulSet "backend" to carry it in its pod template\'s mailops.io/revision annotation'))),
        "progressing": dbu(2, st(2, "Progressing", "1/3", wait("StepInProgress", "backend-1: WaitSessions"))),
        "stalled": dbu(2, st(2, "Failed", "1/3", conds("False", "False", "True", "BackendFailed",
            'backend backend-1 (10.88.0.5) failed at step Verify: command "doveadm mailbox list" exited 67'))),
        "invalid-spec": dbu(2, st(2, "Failed", None, conds("False", "False", "True", "InvalidSpec",
            "spec.verify.user: must not be empty"))),
        "aborted": dbu(4, st(4, "Aborted", "1/3", conds("False", "False", "True", "Aborted",
            "rollout aborted (spec.abort); no backend is drained")), {"abort": True}),
        "complete": dbu(2, done),
        "complete-paused": dbu(2, done, {"paused": True}),
        "paused": dbu(3, st(3, "Paused", "1/3", hold("Paused", "spec.paused is true")), {"paused": True}),
        "awaiting-approval": dbu(4, st(4, "Paused", "1/3", hold("AwaitingApproval",
            "canary upgraded to revision backend-7d9; check it, then approve"))),
        "held": dbu(4, st(4, "Paused", "1/3", hold("BackendHeld", "backend-2 is held"))),
        "outside-window": dbu(4, st(4, "Paused", "0/3", hold("OutsideMaintenanceWindow",
            "outside the maintenance window; it opens in 3h"))),
        "dry-run": dbu(4, st(4, "Planned", "0/3", hold("DryRun",
            "dry run: 3 backends would be upgraded; see status.plan"))),
        "deleting": dbu(2, st(2, "Progressing", "1/3", wait("CleanupPending", "backend-1 could not be put back")),
                        meta={"deletionTimestamp": "2026-12-01T10:05:00Z", "finalizers": ["mailops.io/ring-cleanup"]}),
    }


def ring(generation, status=None):
    o = {"apiVersion": "mailops.io/v1alpha1", "kind": "DovecotRing",
         "metadata": {"name": "mail", "namespace": "mail", "generation": generation},
         "spec": {"directors": {"selector": {"matchLabels": {"app": "dovecot-director"}}},
                  "backends": [{"statefulSet": "backend"}]}}
    if status is not None:
        o["status"] = status
    return o


def ring_fixtures():
    """The ring's states, shaped like the ring pass writes them."""
    synced = {"observedGeneration": 1, "outCount": 0, "hostCount": 3, "users": 12, "synced": "True",
              "conditions": conds("False", "False", "False", "RingSynced", "")}
    synced["conditions"][0] = cond("Ready", "True", "RingSynced", "2 directors agree on 3 hosts; 0 out")
    split = {"observedGeneration": 1, "synced": "False", "conditions": conds("False", "False", "True", "RingSplit",
             "the directors disagree: director-1 has no host 10.88.0.7 (director-0 has); no backend is taken out until they agree")}
    return {
        "ring-no-status": ring(1),
        "ring-older-generation": ring(2, synced),
        "ring-no-director": ring(1, {"observedGeneration": 1, "conditions": conds(
            "False", "True", "False", "NoReadyDirector", "no Ready director pod matches spec.directors.selector")}),
        "ring-synced": ring(1, synced),
        "ring-split": ring(1, split),
        "ring-conflict": ring(1, {"observedGeneration": 1, "conditions": conds("False", "False", "True", "RingConflict",
            "DovecotRing mail and DovecotRing zone-b select the same directors (director-0): they are one director ring; merge them into one")}),
    }


def argocd_cm(tmp):
    """argocd-cm as the shipped patch leaves it: the patch's data in a ConfigMap."""
    text = open(PATCH).read()
    body = text[text.index("data:"):]
    path = os.path.join(tmp, "argocd-cm.yaml")
    with open(path, "w") as f:
        f.write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n" + body)
    return path


def argocd_health(argocd, cm, path):
    out = subprocess.run([argocd, "admin", "settings", "resource-overrides", "health", path,
                          "--argocd-cm-path", cm], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"argocd failed on {path}: {out.stderr.strip()}")
    fields = {}
    for line in out.stdout.splitlines():
        k, _, v = line.partition(":")
        fields[k.strip().upper()] = v.strip()
    return fields.get("STATUS", ""), fields.get("MESSAGE", "")


def judge(argocd, kstatus, objects, messages=True):
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        cm = argocd_cm(tmp)
        paths = {}
        for name, obj in objects.items():
            paths[name] = os.path.join(tmp, name + ".json")
            with open(paths[name], "w") as f:
                json.dump(obj, f)
        ks = subprocess.run([kstatus, *paths.values()], capture_output=True, text=True, timeout=60)
        if ks.returncode != 0:
            raise SystemExit(f"kstatus failed: {ks.stderr.strip()}")
        by_file = {}
        for line in ks.stdout.splitlines():
            r = json.loads(line)
            by_file[r["file"]] = r
        for name, path in paths.items():
            want_health, want_msg, want_ks = EXPECT[name]
            health, msg = argocd_health(argocd, cm, path)
            k = by_file[path]
            ok = health == want_health and (not messages or want_msg in msg) and k["status"] == want_ks
            failed += not ok
            print(f"{'ok' if ok else 'not ok'} - {name}: Argo CD {health} ({msg}); kstatus {k['status']} ({k['message']})"
                  + ("" if ok else f"; want Argo CD {want_health} with {want_msg!r}, kstatus {want_ks}"))
    print(f"{len(objects) - failed} passed, {failed} failed")
    return failed


# (state, action, params) -> what the action must leave changed (dotted path -> value); the rest
# of the object must be unchanged, the status above all.
ACTIONS = [
    ("progressing", "pause", {}, {"spec.paused": True}),
    ("paused", "resume", {}, {"spec.paused": False, "spec.abort": False}),
    ("progressing", "abort", {}, {"spec.abort": True}),
    ("aborted", "resume", {}, {"spec.paused": False, "spec.abort": False}),
    ("awaiting-approval", "approve-canary", {}, {"spec.canary": {"approvedRevision": "backend-7d9"}}),
    ("awaiting-approval+revision", "approve-canary", {}, {"spec.canary": {"approvedRevision": "2.3.21-cfg7"}}),
    ("stalled", "retry", {}, {"metadata.annotations": {"mailops.io/retry": "argocd-4711"}}),
    ("progressing", "skip-backend", {}, {"spec.skip": ["backend-1"]}),
    ("progressing", "skip-backend", {"backend": "backend-4"}, {"spec.skip": ["backend-4"]}),
]

# state -> actions offered enabled (the others are listed disabled)
ENABLED = {
    "progressing": {"pause", "abort", "skip-backend"},
    "paused": {"resume", "abort", "skip-backend"},
    "awaiting-approval": {"pause", "abort", "approve-canary", "skip-backend"},
    "stalled": {"pause", "abort", "retry", "skip-backend"},
    "aborted": {"pause", "resume", "retry", "skip-backend"},
}


def action_objects():
    objs = fixtures()
    objs["progressing"]["status"]["current"] = "backend-1"
    objs["awaiting-approval"]["status"]["targetRevision"] = "backend-7d9"
    rev = json.loads(json.dumps(objs["awaiting-approval"]))
    rev["spec"]["revision"] = "2.3.21-cfg7"
    objs["awaiting-approval+revision"] = rev
    for o in objs.values():
        o["metadata"]["resourceVersion"] = "4711"
    return objs


def flat(obj, path):
    for k in path.split("."):
        obj = (obj or {}).get(k)
    return obj


def run_action(argocd, cm, path, action, params=None):
    """Runs the shipped action on the object in `path` with Argo CD's engine. Returns the object
    it leaves (None when none came back) and argocd's output, for messages."""
    import yaml
    # run-action prints a diff of (live, acted): a diff program that prints its second file
    # and its scratch folders (argocd-diff*) in the judge's temporary folder, not /tmp
    env = dict(os.environ, KUBECTL_EXTERNAL_DIFF="sh -c 'cat \"$2\"' diff", TMPDIR=os.path.dirname(cm))
    argv = [argocd, "admin", "settings", "resource-overrides", "run-action", path, action,
            "--argocd-cm-path", cm]
    for k, v in (params or {}).items():
        argv += ["--param", f"{k}={v}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    text = out.stdout.split("Following fields have been changed:", 1)[-1]
    after = yaml.safe_load(text) if out.returncode == 0 else None
    return (after if isinstance(after, dict) else None), out


def actions(argocd):
    failed = total = 0
    objs = action_objects()
    with tempfile.TemporaryDirectory() as tmp:
        cm = argocd_cm(tmp)

        def path_of(state):
            p = os.path.join(tmp, state + ".json")
            with open(p, "w") as f:
                json.dump(objs[state], f)
            return p

        for state, want in ENABLED.items():
            out = subprocess.run([argocd, "admin", "settings", "resource-overrides", "list-actions",
                                  path_of(state), "--argocd-cm-path", cm],
                                 capture_output=True, text=True, timeout=60)
            rows = dict(line.split()[:2] for line in out.stdout.splitlines()[1:] if line.strip())
            got = {a for a, disabled in rows.items() if disabled == "false"}
            ok = out.returncode == 0 and got == want and len(rows) == 6
            total += 1
            failed += not ok
            print(f"{'ok' if ok else 'not ok'} - offered in {state}: {sorted(got)}"
                  + ("" if ok else f"; want {sorted(want)} ({out.stderr.strip()[-300:]})"))
        for state, action, params, want in ACTIONS:
            before = objs[state]
            after, out = run_action(argocd, cm, path_of(state), action, params)
            problems = []
            if after is None:
                problems.append(f"no object back: {out.stdout[-200:]} {out.stderr[-300:]}")
            else:
                for k, v in want.items():
                    if flat(after, k) != v:
                        problems.append(f"{k} is {flat(after, k)!r}, want {v!r}")
                if after.get("status") != before.get("status"):
                    problems.append("the action changed the status")
                rest_a = {k: v for k, v in after.items() if k not in ("spec", "metadata")}
                rest_b = {k: v for k, v in before.items() if k not in ("spec", "metadata")}
                if rest_a != rest_b:
                    problems.append("the action changed more than spec and metadata")
            total += 1
            failed += bool(problems)
            print(f"{'ok' if not problems else 'not ok'} - {action} {params or ''} on {state}"
                  + (": " + "; ".join(problems) if problems else ""))
    print(f"{total - failed} passed, {failed} failed")
    return failed


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "act":
        with tempfile.TemporaryDirectory() as tmp:
            after, out = run_action(sys.argv[2], argocd_cm(tmp), sys.argv[4], sys.argv[3])
        if after is None:
            raise SystemExit(f"no object back from {sys.argv[3]}: {out.stdout[-300:]} {out.stderr[-300:]}")
        json.dump(after, sys.stdout)
        return
    if len(sys.argv) == 3 and sys.argv[1] == "actions":
        sys.exit(1 if actions(sys.argv[2]) else 0)
    if len(sys.argv) >= 4 and sys.argv[1] == "fixtures":
        objs = {**fixtures(), **ring_fixtures()}
        missing = set(EXPECT) - set(objs)
        assert not missing, missing
        sys.exit(1 if judge(sys.argv[2], sys.argv[3], objs) else 0)
    if len(sys.argv) == 5 and sys.argv[1] == "live":
        d = sys.argv[4]
        objs = {}
        for f in sorted(os.listdir(d)):
            state = f.rsplit(".", 1)[0]
            if state not in EXPECT:
                raise SystemExit(f"{f}: unknown state (one of {', '.join(EXPECT)})")
            objs[state] = json.load(open(os.path.join(d, f)))
        if not objs:
            raise SystemExit(f"no objects in {d}")
        # live messages are the operator's own; the fixtures pin the script's wording
        sys.exit(1 if judge(sys.argv[2], sys.argv[3], objs, messages=False) else 0)
    sys.exit(__doc__)


if __name__ == "__main__":
    main()
