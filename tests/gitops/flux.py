#!/usr/bin/env python3
"""The Flux suite's Git work tree and its judge (tests/e2e/flux.sh).

  flux.py init TREE WORKLOADS DBU   the example workloads and the DBU as a Flux repository tree
  flux.py edit TREE OP...           a commit's change; OPs:
      revision=R                    the pod template's mailops.io/revision and the DBU's spec.revision
      image=TAG                     the backend container's dbu-dovecot tag
      greeting=G                    the backends' login_greeting (a config change)
      broken=yes|no                 a setting Dovecot refuses, so the new pods never become Ready
      spec.a.b=JSON                 a field of the DBU's spec (JSON null removes it)
      annotation.K=V                an annotation of the DBU
      dbu=absent|present            whether the DBU is in the Kustomization at all
  flux.py watch FILE                one JSON line per sample: the Kustomizations, then the DBU
  flux.py judge FILE CHECK...       checks over the samples (see JUDGES)
"""
import json
import os
import subprocess
import sys
import time

import yaml

BAD_SETTING = "dbu_e2e_no_such_setting = yes"


class Literal(str):
    pass


def literal(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.SafeDumper.add_representer(Literal, literal)


def dump(path, docs):
    def lit(v):
        if isinstance(v, dict):
            return {k: lit(x) for k, x in v.items()}
        if isinstance(v, list):
            return [lit(x) for x in v]
        return Literal(v) if isinstance(v, str) and "\n" in v else v
    with open(path, "w") as f:
        yaml.safe_dump_all([lit(d) for d in docs], f, sort_keys=False)


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def init(tree, workloads, dbu):
    os.makedirs(f"{tree}/mail", exist_ok=True)
    os.makedirs(f"{tree}/health", exist_ok=True)
    dump(f"{tree}/mail/workloads.yaml", load(workloads))
    dump(f"{tree}/mail/dbu.yaml", load(dbu))
    dump(f"{tree}/mail/kustomization.yaml", [{"resources": ["workloads.yaml", "dbu.yaml"]}])
    # the second Kustomization applies only a marker and judges the DBU with healthCheckExprs
    dump(f"{tree}/health/kustomization.yaml", [{"resources": ["marker.yaml"]}])
    dump(f"{tree}/health/marker.yaml", [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "rollout-health-marker", "namespace": "flux-system"},
        "data": {"purpose": "judges the DBU with the README's healthCheckExprs"}}])


def find(docs, kind, name):
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise SystemExit(f"flux.py: no {kind}/{name}")


def edit(tree, ops):
    wpath, dpath, kpath = (f"{tree}/mail/{f}.yaml" for f in ("workloads", "dbu", "kustomization"))
    docs, (dbu,), (kust,) = load(wpath), load(dpath), load(kpath)
    sts, cm = find(docs, "StatefulSet", "backend"), find(docs, "ConfigMap", "backend-config")
    for op in ops:
        key, _, value = op.partition("=")
        if key == "revision":
            sts["spec"]["template"]["metadata"].setdefault("annotations", {})["mailops.io/revision"] = value
            dbu["spec"]["revision"] = value
        elif key == "image":
            for c in sts["spec"]["template"]["spec"]["containers"]:
                if c["image"].split(":")[0] == "dbu-dovecot":
                    c["image"] = f"dbu-dovecot:{value}"
        elif key == "greeting":
            lines = [ln for ln in cm["data"]["dovecot.conf"].splitlines() if not ln.startswith("login_greeting = ")]
            cm["data"]["dovecot.conf"] = "\n".join([f"login_greeting = {value}"] + lines) + "\n"
        elif key == "broken":
            lines = [ln for ln in cm["data"]["dovecot.conf"].splitlines() if ln != BAD_SETTING]
            if value == "yes":
                lines.append(BAD_SETTING)
            cm["data"]["dovecot.conf"] = "\n".join(lines) + "\n"
        elif key.startswith("spec."):
            *path, leaf = key.split(".")[1:]
            node = dbu["spec"]
            for p in path:
                node = node.setdefault(p, {})
            v = json.loads(value)
            if v is None:
                node.pop(leaf, None)
            else:
                node[leaf] = v
        elif key.startswith("annotation."):
            dbu["metadata"].setdefault("annotations", {})[key[len("annotation."):]] = value
        elif key == "dbu":
            res = [r for r in kust["resources"] if r != "dbu.yaml"]
            kust["resources"] = res + (["dbu.yaml"] if value == "present" else [])
        else:
            raise SystemExit(f"flux.py: unknown edit {op}")
    dump(wpath, docs)
    dump(dpath, [dbu])
    dump(kpath, [kust])


def kubectl_json(*args):
    out = subprocess.run(["kubectl", *args, "-o", "json"], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def cond(obj, typ):
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == typ:
            return c
    return None


def sample():
    ks = {}
    for k in (kubectl_json("-n", "flux-system", "get", "kustomizations.kustomize.toolkit.fluxcd.io") or {}).get("items", []):
        r = cond(k, "Ready") or {}
        st = k.get("status", {})
        ks[k["metadata"]["name"]] = {
            "ready": r.get("status"), "reason": r.get("reason"), "message": (r.get("message") or "")[:400],
            "applied": st.get("lastAppliedRevision"), "attempted": st.get("lastAttemptedRevision")}
    d = kubectl_json("-n", "mail", "get", "dovecotbackendupgrades.mailops.io", "backend-rollout")
    dbu = None
    if d:
        st = d.get("status", {})
        dbu = {"generation": d["metadata"].get("generation"), "observed": st.get("observedGeneration"),
               "deleting": "deletionTimestamp" in d["metadata"],
               "revision": d["spec"].get("revision"), "phase": st.get("phase"), "progress": st.get("progress"),
               "current": st.get("current"), "step": st.get("step"),
               "conditions": {c["type"]: [c["status"], c.get("reason")] for c in st.get("conditions", [])}}
    return {"t": round(time.time(), 2), "ks": ks, "dbu": dbu}


def watch(path):
    while True:
        line = json.dumps(sample())
        with open(path, "a") as f:
            f.write(line + "\n")
        time.sleep(0.5)


def complete(dbu):
    return bool(dbu) and dbu["conditions"].get("Ready", [None])[0] == "True" and dbu["observed"] == dbu["generation"]


def stalled(dbu):
    return bool(dbu) and dbu["conditions"].get("Stalled", [None])[0] == "True"


def records(path):
    # the watcher samples about once a second: judge only once it has sampled after this call
    now = time.time()
    for _ in range(40):
        with open(path) as f:
            last = [json.loads(ln) for ln in f if ln.strip() and '"ks"' in ln][-1:]
        if last and last[0]["t"] > now:
            break
        time.sleep(0.25)
    with open(path) as f:
        rows = [json.loads(ln) for ln in f if ln.strip()]
    return [r for r in rows if "ks" in r], {r["label"]: r for r in rows if "commit" in r}


def short(rev):
    return (rev or "").rsplit(":", 1)[-1][:7]


def judge_never_early(path, ks_name, until=None):
    """No sample shows the Kustomization Ready=True for a commit while the DBU (read just after)
    is not complete for that commit's generation: Ready only once the rollout has ended. With
    UNTIL, only the samples before that mark (when the health check was taken off)."""
    samples, marks = records(path)
    if until:
        samples = [s for s in samples if s["t"] < marks[until]["t"]]
    bad = []
    for a, b in zip(samples, samples[1:]):
        k, k2 = a["ks"].get(ks_name), b["ks"].get(ks_name)
        # stable Ready=True for one revision across two samples: the DBU read between is Flux's
        if not (k and k2 and k["ready"] == "True" and k2["ready"] == "True" and k["applied"] == k2["applied"]):
            continue
        if a["dbu"] is not None and not complete(a["dbu"]):
            bad.append(f"t={a['t']} {ks_name} Ready for {short(k['applied'])} while the DBU is {a['dbu']['phase']} {a['dbu']['progress']}")
    print(f"{ks_name}: {len(samples)} samples, {len(bad)} early Ready")
    for b in bad[:5]:
        print("  " + b)
    return not bad


def judge_in_progress(path, ks_name, label):
    """After the commit LABEL, the Kustomization had that commit applied (attempted) and was not
    Ready while the DBU rolled; it turned Ready=True for it only once the DBU was complete."""
    samples, commits = records(path)
    sha = commits[label]["commit"][:7]
    after = [s for s in samples if s["t"] >= commits[label]["t"]]
    rolling = [s for s in after if short((s["ks"].get(ks_name) or {}).get("attempted")) == sha
               and s["ks"][ks_name]["ready"] != "True" and s["dbu"] and not complete(s["dbu"])]
    ready = [s for s in after if short((s["ks"].get(ks_name) or {}).get("applied")) == sha and s["ks"][ks_name]["ready"] == "True"]
    print(f"{ks_name} @{sha} ({label}): {len(rolling)} samples in progress while the DBU rolled, "
          f"Ready=True from t={ready[0]['t'] if ready else None}")
    if rolling:
        print(f"  e.g. {rolling[len(rolling) // 2]['ks'][ks_name]['reason']}: {rolling[len(rolling) // 2]['ks'][ks_name]['message'][:160]}")
    return bool(rolling) and bool(ready) and complete(ready[0]["dbu"])


def judge_fails_early(path, ks_name, label):
    """After LABEL the DBU stalls, and the Kustomization fails (Ready=False, HealthCheckFailed)
    because of the stalled DBU, named, not at its timeout."""
    samples, commits = records(path)
    sha = commits[label]["commit"][:7]
    after = [s for s in samples if s["t"] >= commits[label]["t"]]
    st = next((s for s in after if stalled(s["dbu"])), None)
    failed = next((s for s in after if short((s["ks"].get(ks_name) or {}).get("attempted")) == sha
                   and s["ks"][ks_name]["ready"] == "False"), None)
    if not st or not failed:
        print(f"{ks_name} @{sha}: DBU stalled at {st and st['t']}, Kustomization failed at {failed and failed['t']}")
        return False
    k = failed["ks"][ks_name]
    print(f"{ks_name} @{sha}: DBU Stalled {st['t'] - commits[label]['t']:.1f}s after the push, "
          f"Kustomization {k['reason']} {failed['t'] - st['t']:.1f}s after that: {k['message'][:240]}")
    return (k["reason"] == "HealthCheckFailed" and "DovecotBackendUpgrade/mail/backend-rollout" in k["message"]
            and "failed early due to stalled resources" in k["message"])


def judge_never_ready(path, ks_name, *labels):
    """No sample shows the Kustomization Ready=True for any of the commits LABELS."""
    samples, commits = records(path)
    shas = {commits[lb]["commit"][:7]: lb for lb in labels}
    bad = [s for s in samples if (s["ks"].get(ks_name) or {}).get("ready") == "True"
           and short(s["ks"][ks_name]["applied"]) in shas]
    seen = {short((s["ks"].get(ks_name) or {}).get("attempted")) for s in samples}
    print(f"{ks_name}: attempted {sorted(shas[x] for x in seen if x in shas)}; Ready for "
          f"{sorted({shas[short(s['ks'][ks_name]['applied'])] for s in bad})}")
    return not bad


JUDGES = {"never-early": judge_never_early, "never-ready": judge_never_ready, "in-progress": judge_in_progress, "fails-early": judge_fails_early}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "init":
        init(*args)
    elif cmd == "edit":
        edit(args[0], args[1:])
    elif cmd == "watch":
        watch(args[0])
    elif cmd == "judge":
        sys.exit(0 if JUDGES[args[1]](args[0], *args[2:]) else 1)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
