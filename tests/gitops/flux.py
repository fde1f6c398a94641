#!/usr/bin/env python3
"""The GitOps suite's Git work tree and its judge (tests/e2e/gitops.sh).

  flux.py init TREE WORKLOADS DBU   the example workloads and the DBU as a repository tree: mail/
                                    for Flux (a kustomization), argo/ for Argo CD (plain manifests)
  flux.py edit DIR OP...            a commit's change to TREE/mail or TREE/argo; OPs:
      revision=R                    the pod template's mailops.io/revision and the DBU's spec.revision
      image=TAG                     the backend container's dbu-dovecot tag
      greeting=G                    the backends' login_greeting (a config change)
      broken=yes|no                 a setting Dovecot refuses, so the new pods never become Ready
      spec.a.b=JSON                 a field of the DBU's spec (JSON null removes it)
      annotation.K=V                an annotation of the DBU (an empty V removes it)
      dbu=absent|present            whether the DBU is in the folder at all
      later=absent|present|same-wave  a ConfigMap in a later Argo CD sync wave than the DBU's, or
                                    in the same (argo/)
  flux.py watch FILE                one JSON line per sample: the Kustomizations, then the DBU
  flux.py failed-for FILE KS SHA    one sample now, into FILE; true when KS failed for commit SHA
  flux.py judge FILE CHECK...       checks over the samples (see JUDGES)
"""
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse

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
    # Argo CD's repo-server renders a folder without kustomization.yaml as plain manifests
    os.makedirs(f"{tree}/argo", exist_ok=True)
    dump(f"{tree}/argo/workloads.yaml", load(workloads))
    dump(f"{tree}/argo/dbu.yaml", load(dbu))
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


def edit(folder, ops):
    wpath, dpath, kpath = (f"{folder}/{f}.yaml" for f in ("workloads", "dbu", "kustomization"))
    # the DBU's file stays when the DBU leaves: a kustomization drops it from its resources,
    # a plain folder moves it aside (Argo CD renders every .yaml file)
    aside = f"{folder}/dbu.yaml.absent"
    docs, (dbu,) = load(wpath), load(dpath if os.path.exists(dpath) else aside)
    kust = load(kpath)[0] if os.path.exists(kpath) else None
    present = os.path.exists(dpath)
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
            ann = dbu["metadata"].setdefault("annotations", {})
            if value:
                ann[key[len("annotation."):]] = value
            else:
                ann.pop(key[len("annotation."):], None)
        elif key == "dbu" and kust is not None:
            res = [r for r in kust["resources"] if r != "dbu.yaml"]
            kust["resources"] = res + (["dbu.yaml"] if value == "present" else [])
        elif key == "dbu":
            present = value == "present"
        elif key == "later":
            later = f"{folder}/later.yaml"
            if value in ("present", "same-wave"):
                meta = {"name": "after-the-rollout", "namespace": "mail"}
                if value == "present":
                    meta["annotations"] = {"argocd.argoproj.io/sync-wave": "2"}
                dump(later, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                              "data": {"purpose": "anything in a sync wave after the DBU's"}}])
            elif os.path.exists(later):
                os.remove(later)
        else:
            raise SystemExit(f"flux.py: unknown edit {op}")
    dump(wpath, docs)
    if kust is not None:
        dump(kpath, [kust])
        dump(dpath, [dbu])
    else:
        for p in (dpath, aside):
            if os.path.exists(p):
                os.remove(p)
        dump(dpath if present else aside, [dbu])


def cond(obj, typ):
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == typ:
            return c
    return None


class Api:
    """GETs to the API server as the admin kubeconfig's user (KUBECONFIG: its server, CA and
    client certificate files), over one kept-alive TLS connection. The watcher samples twice a
    second for the whole suite, and a kubectl costs about 0.1 CPU-s to start: at 10d47b9 its
    kubectl calls (four a sample while Argo CD's kind was not served) were about 920 of a warm
    CI run's 2,800."""

    def __init__(self, kubeconfig):
        with open(kubeconfig) as f:
            kc = yaml.safe_load(f)
        ctx = next(c["context"] for c in kc["contexts"] if c["name"] == kc["current-context"])
        cluster = next(c["cluster"] for c in kc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in kc["users"] if u["name"] == ctx["user"])
        url = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443
        self.tls = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self.tls.load_cert_chain(user["client-certificate"], user["client-key"])
        self.conn = None

    def get(self, path):
        """The object or list at PATH; None when it is not there (404: not served yet, or
        deleted) or the server could not be read (after one retry on a new connection)."""
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.tls, timeout=10)
                self.conn.request("GET", path, headers={"Accept": "application/json"})
                r = self.conn.getresponse()
                body = r.read()
                return json.loads(body) if r.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
        return None


_api = None


def api():
    global _api
    if _api is None:
        _api = Api(os.environ["KUBECONFIG"])
    return _api


KS = "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations"
APPS = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications"
DBU = "/apis/mailops.io/v1alpha1/namespaces/mail/dovecotbackendupgrades/backend-rollout"


def read_all():
    """The Kustomizations, the Applications and the DBU, read in that order (a kind not served
    yet reads as none)."""
    ks = (api().get(KS) or {}).get("items", [])
    apps = (api().get(APPS) or {}).get("items", [])
    return ks, apps, api().get(DBU)


def sample():
    # the GitOps objects first, the DBU last: a GitOps verdict is judged against a later DBU
    ks_items, app_items, d = read_all()
    ks = {}
    for k in ks_items:
        r = cond(k, "Ready") or {}
        st = k.get("status", {})
        ks[k["metadata"]["name"]] = {
            "ready": r.get("status"), "reason": r.get("reason"), "message": (r.get("message") or "")[:400],
            "applied": st.get("lastAppliedRevision"), "attempted": st.get("lastAttemptedRevision")}
    dbu = None
    if d:
        st = d.get("status", {})
        dbu = {"generation": d["metadata"].get("generation"), "observed": st.get("observedGeneration"),
               "deleting": "deletionTimestamp" in d["metadata"],
               "revision": d["spec"].get("revision"), "phase": st.get("phase"), "progress": st.get("progress"),
               "spec": {k: d["spec"].get(k) for k in ("paused", "abort", "hold")} | {
                   "approved": (d["spec"].get("canary") or {}).get("approvedRevision")},
               "current": st.get("current"), "step": st.get("step"),
               "conditions": {c["type"]: [c["status"], c.get("reason")] for c in st.get("conditions", [])}}
    apps = {}
    for a in app_items:
        st = a.get("status", {})
        op = st.get("operationState", {})
        apps[a["metadata"]["name"]] = {
            "sync": st.get("sync", {}).get("status"), "revision": st.get("sync", {}).get("revision"),
            "health": st.get("health", {}).get("status"), "operation": op.get("phase"),
            "message": (op.get("message") or "")[:300], "synced": op.get("syncResult", {}).get("revision")}
    return {"t": round(time.time(), 2), "ks": ks, "apps": apps, "dbu": dbu}


def watch(path):
    while True:
        line = json.dumps(sample())
        with open(path, "a") as f:
            f.write(line + "\n")
        time.sleep(0.5)


def failed_for(path, ks_name, sha):
    """Samples now, into the timeline like the watcher: true when the Kustomization has commit
    SHA attempted and is Ready=False. The check that waits for the failure is itself a sample,
    so the judge sees the failure the check saw (Flux retries within seconds, and a failure
    between two of the watcher's samples was missed on a loaded machine)."""
    s = sample()
    with open(path, "a") as f:
        f.write(json.dumps(s) + "\n")
    k = s["ks"].get(ks_name) or {}
    return k.get("ready") == "False" and short(k.get("attempted")) == sha[:7]


def complete(dbu):
    return bool(dbu) and dbu["conditions"].get("Ready", [None])[0] == "True" and dbu["observed"] == dbu["generation"]


def stalled(dbu):
    return bool(dbu) and dbu["conditions"].get("Stalled", [None])[0] == "True"


def records(path):
    # the watcher samples about once a second: judge only once it has sampled after this call
    now = time.time()
    for _ in range(40):
        with open(path) as f:
            rows = [json.loads(ln) for ln in f if ln.strip()]
        samples = [r for r in rows if "ks" in r]
        if samples and samples[-1]["t"] > now:
            break
        time.sleep(0.25)
    return samples, {r["label"]: r for r in rows if "commit" in r}


def short(rev):
    return (rev or "").rsplit(":", 1)[-1][:7]


def never_early(samples, done, name, what):
    """No sample where a tool calls itself done (DONE gives the revision it is done with, or
    None) while the DBU is not complete; prints how many said WHAT and the first early ones.
    Only a verdict that holds for one revision in a sample and the next counts, and only while
    the DBU is not complete in both: the tools publish their verdict a moment after they judge,
    so a DBU read right after a new commit reached it (its generation not yet observed) is not
    what a verdict one sample old judged (CI caught Argo CD's Healthy for the commit before,
    1 s old, beside the next commit's unobserved generation, twice)."""
    said, bad = 0, []
    for a, b in zip(samples, samples[1:]):
        x = done(a)
        if x is None or x != done(b):
            continue
        said += 1
        incomplete = lambda s: s["dbu"] is not None and not complete(s["dbu"])
        if incomplete(a) and incomplete(b):
            bad.append(f"t={a['t']} done with {short(x)} while the DBU is {a['dbu']['phase']} {a['dbu']['progress']}")
    print(f"{name}: {len(samples)} samples, {said} {what}, {len(bad)} while the DBU was not complete")
    for b in bad[:5]:
        print("  " + b)
    return not bad


def judge_never_early(path, ks_name, until=None):
    """No sample shows the Kustomization Ready=True for a commit while the DBU (read just after)
    is not complete for that commit's generation: Ready only once the rollout has ended. With
    UNTIL, only the samples before that mark (when the health check was taken off)."""
    samples, marks = records(path)
    if until:
        samples = [s for s in samples if s["t"] < marks[until]["t"]]
    def done(s):
        k = s["ks"].get(ks_name)
        return k["applied"] if k and k["ready"] == "True" else None
    return never_early(samples, done, ks_name, "Ready")


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


def judge_argo_healthy_only_complete(path, app):
    """No sample shows the Argo CD Application Healthy (twice in a row, for one revision) while
    the DBU read between is not complete."""
    samples, _ = records(path)

    def done(s):
        a = s.get("apps", {}).get(app)
        return a["revision"] if a and a["health"] == "Healthy" else None
    return never_early(samples, done, app, "Healthy")


def judge_argo_held_back(path, app, label, field):
    """The commit LABEL (setting spec.FIELD) reached the DBU only once the rollout had completed:
    the sync operation of the commit before it was still waiting on the DBU's health."""
    samples, commits = records(path)
    after = [s for s in samples if s["t"] >= commits[label]["t"] and s["dbu"]]
    running = [s for s in after if (s.get("apps", {}).get(app) or {}).get("operation") == "Running"
               and not complete(s["dbu"]) and not s["dbu"]["spec"].get(field)]
    done = next((s for s in after if complete(s["dbu"])), None)
    arrived = next((s for s in after if s["dbu"]["spec"].get(field)), None)
    print(f"{app}: after {label}, {len(running)} samples with the operation Running and spec.{field} not applied "
          f"({running[0]['apps'][app]['message'][:100] if running else '-'}); DBU complete at "
          f"+{done['t'] - commits[label]['t']:.1f}s, spec.{field} applied at "
          f"+{arrived['t'] - commits[label]['t']:.1f}s" if done and arrived else f"{app}: done={done is not None} arrived={arrived is not None}")
    return bool(running) and done is not None and arrived is not None and done["t"] <= arrived["t"]


JUDGES = {"argo-healthy-only-complete": judge_argo_healthy_only_complete, "argo-held-back": judge_argo_held_back,
          "never-early": judge_never_early, "never-ready": judge_never_ready, "in-progress": judge_in_progress, "fails-early": judge_fails_early}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "init":
        init(*args)
    elif cmd == "edit":
        edit(args[0], args[1:])
    elif cmd == "watch":
        watch(args[0])
    elif cmd == "failed-for":
        sys.exit(0 if failed_for(*args) else 1)
    elif cmd == "judge":
        sys.exit(0 if JUDGES[args[1]](args[0], *args[2:]) else 1)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
