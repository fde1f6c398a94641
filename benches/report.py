"""Turns the benchmarks' JSON lines into BENCHMARKS.md: tables with min / median / max where the
figure is a time, the machine beside them, and the goals from issue 6."""
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

# `--soak` reads the fault soak's log (its SCENARIO line), not JSON rows
soak_mode = len(sys.argv) > 2 and sys.argv[2] == "--soak"
rows = [] if soak_mode else [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = defaultdict(list)
for r in rows:
    by[r["bench"]].append(r)


def mmm(values, fmt="{:.2f}"):
    v = sorted(values)
    return " / ".join(fmt.format(x) for x in (v[0], statistics.median(v), v[-1]))


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


mem_gib = int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
out = []
p = out.append
p("# Benchmarks")
p("")
p("Produced by `./scripts/bench.sh` (one command; it rewrites this file). Times are min / median / max")
p("over repeated runs.")
p("")
p(f"Machine: {os.cpu_count()} cores ({cpu()}), {mem_gib:.1f} GiB memory, {platform.system()} {platform.release()}; commit {commit}.")
p("")

p("## 1. Rollout overhead over unavoidable work (real Dovecot 2.3.19 rig)")
p("")
p("`benches/rollout.rs`: a real director and N backends on loopback, driven by the operator's engine")
p("(`engine::drive`, the same reconcile as the controller). *Unavoidable* is the time inside the")
p("runbook's own commands (every step's doveadm/find argv), pod restarts (kill, recreate, Dovecot")
p("start) and the wait for mapped users to leave. *Overhead* is the rest of the wall time: the")
p("operator's ring reads on every pass, decisions, requeues. The runbook figure is the same command")
p("and restart times plus its fixed 15-minute wait per backend.")
p("")
p("| scenario | N | runs | wall s | commands s | restarts s | user wait s | overhead s / backend (goal <= 1) | runbook s | speedup |")
p("|---|---|---|---|---|---|---|---|---|---|")
groups = defaultdict(list)
for r in by["rollout"]:
    groups[(r["scenario"], r["backends"])].append(r)
LABELS = {
    "idle": "idle (no users mapped)",
    "users": "users logged out just before (expiry 10 s)",
    "probes": "idle, IMAP probe and soak (director login)",
}
ORDER = ["idle", "users", "probes"]
for (sc, n), rs in sorted(groups.items(), key=lambda kv: (ORDER.index(kv[0][0]), kv[0][1])):
    label = LABELS[sc]
    p(f"| {label} | {n} | {len(rs)} | {mmm([r['wall_s'] for r in rs])} | {mmm([r['step_commands_s'] for r in rs])} "
      f"| {mmm([r['pod_restarts_s'] for r in rs])} | {mmm([r['drain_wait_s'] for r in rs])} "
      f"| {mmm([r['overhead_per_backend_s'] for r in rs], '{:.3f}')} | {mmm([r['runbook_s'] for r in rs], '{:.0f}')} "
      f"| {mmm([r['speedup'] for r in rs], '{:.0f}x')} |")
p("")
rs = by["rollout"]
if rs:
    p(f"Per run, on average: {statistics.mean(r['step_commands'] / r['backends'] for r in rs):.0f} step commands and "
      f"{statistics.mean(r['ring_reads'] / r['backends'] for r in rs):.1f} ring reads per backend, "
      f"{statistics.mean(r['reconciles'] / r['backends'] for r in rs):.1f} reconciles per backend.")
    p("")
    # what Verify's IMAP probe and the soak add per backend (issue 13)
    if all("verify_per_backend_s" in r for r in rs) and groups.get(("probes", 3)):
        p("What the IMAP probe and the soak add per backend (N = 3, idle ring). Verify: the doveadm checks")
        p("and the LMTP probe in both; *probes* adds the IMAP login at the new pod's IP (plain text in the")
        p("lab, so no TLS handshake), the search, fetch and expunge of the probe message. Soak: until a")
        p("login through the director, after `director move` of the verify user, landed on the backend.")
        p("Its ~2 s is Dovecot's `director_user_kick_delay` (default 2 s): after a move the director")
        p("holds the user's next login that long. On a ring with users the soak passes on their mappings")
        p("instead, without a move.")
        p("")
        p("| scenario | Verify s / backend | Soak s / backend |")
        p("|---|---|---|")
        for sc in ("idle", "probes"):
            g = groups.get((sc, 3), [])
            if g:
                p(f"| {LABELS[sc]} | {mmm([r['verify_per_backend_s'] for r in g], '{:.3f}')} "
                  f"| {mmm([r['soak_per_backend_s'] for r in g], '{:.3f}')} |")
        p("")

p("## 2. Memory (the operator pod on the real node)")
p("")
p("`benches/cluster.sh`, on the real node of the end-to-end suite (kubelet, containerd, kube-apiserver")
p("1.36): the operator is the chart's pod, from its image. *VmRSS* is its process's resident set")
p("(binary and library pages included, as earlier figures measured); *cgroup* is what its container's")
p("memory cgroup is charged (`memory.stat` rss + mapped_file: its heap and stacks, and file pages it")
p("faulted in first; the binary's pages read while containerd unpacked the image are charged there).")
p("The scale cases run a second release of the chart cluster-wide over 100 StatefulSets in 10")
p("DovecotRings, one DBU each, at 1, 10 and 50 pods per StatefulSet (Pending: a node selector no node")
p("has, which changes nothing for the operator's caches); at each size the operator is restarted (its")
p("first LIST is of them all) and sampled at rest once its 100 DBUs are reconciled. *Peak* is VmHWM,")
p("the most it held since it started (its first LIST and reconciles included). The operator decodes")
p("pods lean and keeps them so (`LeanPod`: 416 bytes inline a pod, a `Pod` 2,176; at 34293d9, which")
p("kept slimmed `Pod`s, 17.3, 21.5 and 39.9 MiB at 100, 1,000 and 5,000 pods), lists in pages of")
p("100, reconciles at most 10 DBUs at once, and")
p("runs a size-optimised build (opt-level s, fat LTO) with one glibc arena. The allocator was")
p("measured, not guessed (the same 1,000-pod case, the operator run outside a pod): glibc 28.8 MiB,")
p("glibc with one arena 27.8, mimalloc 49.9 (peak 62.6); the size-optimised build took 16.3 MiB of")
p("binary pages to 10.9.")
p("")
p("| case | VmRSS MiB | peak MiB | cgroup MiB | goal (VmRSS) |")
p("|---|---|---|---|---|")
rest = next((r["rss_kib"] for r in by["memory"] if r["case"].startswith("at rest after")), None)
for r in by["memory"]:
    if r["case"].startswith("during") and rest:
        goal = f"<= {rest / 1024 + 5:.1f} (at rest + 5)"
    elif r.get("pods", 1000) <= 1100 or not r["case"].startswith("at rest watching"):
        goal = "<= 20"
    else:
        goal = "(curve)"
    cg = f"{r['cgroup_kib'] / 1024:.1f}" if "cgroup_kib" in r else "-"
    hwm = f"{r['hwm_kib'] / 1024:.1f}" if "hwm_kib" in r else "-"
    p(f"| {r['case']} | {r['rss_kib'] / 1024:.1f} | {hwm} | {cg} | {goal} |")
p("")
if by["api_scale"]:
    p("Requests of the scale operator from its restart until the end of its sampling, about a minute (the")
    p("LISTs of its watches in pages of 100, and its DBUs' passes). Its DBUs wait for pods that stay")
    p("Pending and poll every 5-10 s; each poll looks for backends a deleted DBU left out in the ring")
    p("watch's copy of the ring's record (`needs::cached_lock_stands`), not with a `get dovecotrings`")
    p("(at 34293d9 that read was 856 of 865 requests at 108 pods, 111 of 129 at 1,008).")
    p("")
    p("| pods | requests | by kind |")
    p("|---|---|---|")
    for r in by["api_scale"]:
        p(f"| {r['pods']} | {sum(r['requests'].values())} | {', '.join(f'`{k}` {v}' for k, v in r['requests'].items())} |")
    p("")

p("## 3. API cost")
p("")
p("From the API server's audit log, requests by the operator's ServiceAccount. Watches are the")
p("long-lived streams behind the caches (a re-list after a watch ends shows up as `list`).")
p("")
for r in by["api_rollout"]:
    n = r["backends"]
    p(f"Rollout of {n} backends in {r['seconds']} s ({r['step_transitions']} step transitions: BackendStarted + StepSucceeded events):")
    p("")
    p("| request | total | per backend |")
    p("|---|---|---|")
    for k, v in r["requests"].items():
        p(f"| `{k}` | {v} | {v / n:.1f} |")
    patches = r["requests"].get("patch dovecotbackendupgrades/status", 0)
    p("")
    p(f"Status patches: {patches} for {r['step_transitions']} step transitions "
      f"({patches / max(r['step_transitions'], 1):.2f} per transition; goal <= 1). At 34293d9, before a")
    p("pass took a Begin's claim and a release's next Begin into one write, Verify's probe token into")
    p("the write that starts Verify, and before Replace waited on the pod cache: 51 patches (1.55 per")
    p("transition) and 61 `get pods` (13.3 a backend in Replace).")
    p("")
for r in by["status_writes"]:
    other = ", ".join(f"{k} {v}" for k, v in r["other"].items()) or "none"
    p(f"The DBU's status writes as its watchers saw them (`benches/status_writes.py`, by `status.writeSeq`):")
    p(f"{r['writes']} writes, {r['transitions']} of them with a step transition (a backend begun or its")
    p(f"step changed); the others, by the Reconciling reason they wrote: {other}.")
    p("")
for r in by["api_steps"]:
    kinds = sorted({k for v in r["steps"].values() for k in v})
    p(f"The same rollout's requests per backend, by the step they served (`benches/exec_steps.py`: a request")
    p("belongs to the step whose StepSucceeded Event follows it; *between backends* is the choice of the")
    p("next one):")
    p("")
    p("| step | " + " | ".join(f"`{k}`" for k in kinds) + " |")
    p("|---|" + "---|" * len(kinds))
    for step, v in r["steps"].items():
        p(f"| {step} | " + " | ".join(f"{v.get(k, 0):g}" for k in kinds) + " |")
    total = {k: sum(v.get(k, 0) for v in r["steps"].values()) for k in kinds}
    p("| **all** | " + " | ".join(f"{total[k]:g}" for k in kinds) + " |")
    p("")
for r in by["api_rest"]:
    nonwatch = {k: v for k, v in r["requests"].items() if not k.startswith("watch ")}
    p(f"At rest for {r['seconds']} s after the rollout: {sum(nonwatch.values())} requests beyond watches "
      f"({json.dumps(nonwatch) if nonwatch else 'none'}; goal 0).")
    p("")

p("## 4. Status size")
p("")
p("`benches/reconcile.rs`: a rollout over 1,000 backends simulated with the plan's own functions")
p("(every step succeeds at once), serializing the status after every pass.")
p("")
p("| finished records | largest status | final status | dry-run plan (`status.plan`) | goal |")
p("|---|---|---|---|---|")
seen = set()
for r in by["status_size"]:
    key = r["compaction"]
    if key in seen:
        continue
    seen.add(key)
    label = "newest 10 kept (the operator)" if r["compaction"] else "all kept (before the fix, for comparison)"
    p(f"| {label} | {r['largest_status_bytes'] / 1024:.1f} KiB | {r['final_status_bytes'] / 1024:.1f} KiB | {r['dry_run_plan_bytes'] / 1024:.1f} KiB | <= 64 KiB |")
p("")

p("## 5. Reconcile latency")
p("")
p("`benches/reconcile.rs`: `engine::reconcile_once` for DBUs whose 100 backends are all at the target")
p("revision (a decision without exec), with 1,002 pods, 10 StatefulSets and 100 DBUs in the watch")
p("stores; the client is a mock that fails on any request, the exec fails on any call.")
p("")
p("| runs | rounds per run | p50 ms | p99 ms (goal < 50) | max ms |")
p("|---|---|---|---|---|")
rc = by["reconcile"]
if rc:
    p(f"| {len(rc)} | {rc[0]['rounds']} | {mmm([r['p50_ms'] for r in rc], '{:.3f}')} | {mmm([r['p99_ms'] for r in rc], '{:.3f}')} | {mmm([r['max_ms'] for r in rc], '{:.3f}')} |")
p("")
p("## 6. A real version upgrade on a real node")
p("")
p("`tests/e2e/real-node.sh` (kubelet, containerd, runc, CNI, kube-proxy and CoreDNS in a network")
p("namespace of their own; the operator as a pod from its image): three backends from Dovecot")
p("2.3.19 to 2.3.21 with a config change, live IMAP logins and LMTP deliveries through both")
p("directors, the operator's pods killed twice and the operator itself upgraded mid-rollout. The")
p("ring keeps the shipped `director_user_expire = 15 min`, and the test's DBU a 20 s drain timeout")
p("with `onTimeout: Proceed`: the live users never stop, so every drain runs to that ceiling (with")
p("the shipped 15 m timeout it would run 15 minutes, as the runbook's wait; issue 16). The runbook")
p("figure per backend is its fixed 15-minute wait plus the same non-drain time.")
p("")
p("| backend | rollout s | of which Drain + WaitSessions s | runbook s |")
p("|---|---|---|---|")
rn = [r for r in by["realnode"] if r["kind"] == "backend"]
for r in rn:
    p(f"| {r['pod']} | {r['seconds']:.1f} | {r['drain']:.1f} | {900 + r['seconds'] - r['drain']:.0f} |")
if rn:
    p(f"| median | {statistics.median(r['seconds'] for r in rn):.1f} | {statistics.median(r['drain'] for r in rn):.1f} | "
      f"{statistics.median(900 + r['seconds'] - r['drain'] for r in rn):.0f} |")
p("")
for r in (r for r in by["realnode"] if r["kind"] == "rest"):
    p(f"The leader pod at rest after the rollout, its memory cgroup (`memory.stat` rss + mapped_file, max over 20 s): "
      f"{r['cgroup_kib'] / 1024:.1f} MiB. Live traffic: {r['traffic']}.")
    p("")
    p("Requests by the operator's ServiceAccount over the whole run (both releases, the kills and the upgrade), from the audit log:")
    p("")
    p("| request | total |")
    p("|---|---|")
    for k, v in r["requests"].items():
        p(f"| `{k}` | {v} |")
    p("")


def drain_section(rows):
    """Section 7 from the drain bench's rows (also spliced alone by `report.py --drain`)."""
    o = []
    q = o.append
    q("## 7. The drain on a realistic workload (real Dovecot 2.3.19 rig)")
    q("")
    q("`benches/drain.rs`: a director and three backends on loopback with the production")
    q("`director_user_expire = 15m` and IDLE sessions hibernating after 10 s; 300 users, all through")
    q("the director: 60 parked in IDLE (reconnecting when closed), 120 polling every minute (login,")
    q("SELECT, logout), 120 that logged out just before the rollout, and an LMTP delivery every")
    q("200 ms to each user in turn. Per backend: *drain* is WaitSessions' time; *kicks* are IDLE")
    q("sessions the server closed while that backend was out (Drain to Done); *failed logins* are")
    q("logins that did not succeed then; *deferred* are deliveries answered 4xx then; *execs/s* are")
    q("the operator's exec requests to the pods per second of drain. *Move* is the default. *Wait* ran")
    q("with a 60 s ceiling: the pollers and IDLE clients keep the director's count above 0 for ever,")
    q("so Wait ends at its ceiling whatever it is (with the shipped 15 m, 900 s per backend); at the")
    q("ceiling both strategies move the users still mapped (`director flush`) before anything stops.")
    q("The *runbook* waits its fixed 15 minutes. Measured at commit")
    q(f"{commit} (`scripts/bench.sh drain` reruns this section alone).")
    q("")
    q("| strategy | runs | backends | users mapped at start | drain s | kicks / backend | failed logins / backend | deferred / backend | execs/s draining | sessions moved / backend | sessionless users moved / backend | rollout s (3 backends) | runbook s |")
    q("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for strat in ("Move", "Wait"):
        rs = [r for r in rows if r["strategy"] == strat]
        if not rs:
            continue
        bs = [b for r in rs for b in r["backends"]]
        q(f"| {strat} | {len(rs)} | {len(bs)} | {mmm([b['users_at_start'] for b in bs], '{:.0f}')} | {mmm([b['drain_s'] for b in bs], '{:.1f}')} "
          f"| {mmm([b['kicks'] for b in bs], '{:.0f}')} | {mmm([b['failed_logins'] for b in bs], '{:.0f}')} "
          f"| {mmm([b.get('deferred', 0) for b in bs], '{:.0f}')} | {mmm([b.get('execs_per_s', 0) for b in bs], '{:.1f}')} "
          f"| {mmm([b['sessions_moved'] for b in bs], '{:.0f}')} | {mmm([b['users_moved'] for b in bs], '{:.0f}')} "
          f"| {mmm([r['wall_s'] for r in rs], '{:.0f}')} | {mmm([r['runbook_s'] for r in rs], '{:.0f}')} |")
    q("")
    allr = rows
    if allr:
        q(f"Over all runs: {sum(r['failed_logins'] for r in allr)} failed logins, {sum(r['bounced'] for r in allr)} bounced and "
          f"{sum(r['deferred'] for r in allr)} deferred deliveries, {sum(r['kicks_outside'] for r in allr)} kicks outside any backend's "
          f"window, {sum(r['logins'] for r in allr)} logins. Goal (issue 29): 0 failed logins and 0 bounced mail for both strategies; "
          "kicks no more than sessions moved; Move under 10 s per busy backend.")
        q("")
        q("Before issue 29, Wait's ceiling stopped LMTP and Dovecot while users were still mapped (the runbook's order),")
        q("and the director does not health-check backends, so those users' logins failed (`[UNAVAILABLE]`, 24-28 per")
        q("busy backend) until `down` + `flush` moved them. Now the ceiling's `director flush` moves them first, and")
        q("nobody is mapped when anything stops, under either strategy. Kicks: each IDLE session is closed once per backend it sits")
        q("on, by Move's `director move` or by the ceiling's stop and flush; a user moved to a backend upgraded later is")
        q("moved again, with either strategy.")
        q("")
    return o


def outage_section(rows):
    """Section 8 from the e2e's outage rows (also spliced alone by `report.py --outage`)."""
    o = []
    q = o.append
    q("## 8. Resuming after an API outage (the real node)")
    q("")
    q("`tests/e2e/e2e.sh` Part D, `OUTAGE_ROUNDS` rollouts of three backends: in each, the API server")
    q("stops for 30 s once a backend is at StopDovecot, at Replace and at Verify. *Service* is when the")
    q("`kubernetes` Service (10.96.0.1, through kube-proxy's rules; the operator's way in) answered a")
    q("probe from the operator pod's network namespace again, after the API server itself was ready;")
    q("*moved on* is when the DBU's status showed the next step, after the API server and after the")
    q("Service. The watches retry from 250 ms doubling to 4 s (kube's default grows to 30 s), and a")
    q("failed reconcile backs off 1 s doubling to 15 s; a watch that comes back wakes the DBU at once.")
    q(f"Measured at commit {commit} (`scripts/bench.sh outage` reruns this section alone).")
    q("")
    steps = [r for r in rows if "step" in r]
    q("| outage at | outages | Service answered, s after the API server | moved on, s after the API server | moved on, s after the Service |")
    q("|---|---|---|---|---|")
    for step in ("StopDovecot", "Replace", "Verify"):
        rs = [r for r in steps if r["step"] == step]
        if rs:
            q(f"| {step} | {len(rs)} | {mmm([r['service_ms'] / 1000 for r in rs], '{:.1f}')} "
              f"| {mmm([r['moved_ms'] / 1000 for r in rs], '{:.1f}')} | {mmm([r['after_service_ms'] / 1000 for r in rs], '{:.1f}')} |")
    q("")
    rounds = [r for r in rows if "round_ok" in r]
    if rounds:
        ok = sum(1 for r in rounds if r["round_ok"])
        q(f"Rounds: {len(rounds)}; in {ok} of them no change of the DBU (every change, from a watch) was")
        q("Stalled=True from the first return of the API server until Ready, and progress never went back;")
        q(f"Ready {mmm([r['ready_s'] for r in rounds], '{:.0f}')} s after the last outage of the round ended.")
        q("")
    return o


if by["outage"]:
    out.extend(outage_section(by["outage"]))


def splice(number, section, text=None):
    """Replaces section `number` of an existing BENCHMARKS.md (sys.argv[3]), the rest kept;
    prints the result, or returns it when given the text to splice into."""
    give_back = text is not None
    if text is None:
        text = open(sys.argv[3]).read().split("\n")
    start = next((i for i, l in enumerate(text) if l.startswith(f"## {number}. ")), len(text))
    end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")), len(text))
    if start == len(text):
        while text and not text[-1].strip():
            text.pop()
        start = end = len(text)
        section = [""] + section
    text[start:end] = section
    if give_back:
        return text
    print("\n".join(text).rstrip("\n"))


def section_of(lines, number):
    """Section `number` of the generated lines."""
    start = next(i for i, l in enumerate(lines) if l.startswith(f"## {number}. "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def soak_section(log):
    """Section 9 from the SCENARIO line `tests/fault_soak.rs` prints (`scripts/fault-soak.sh`)."""
    import re
    line = next(l for l in open(log) if l.startswith("SCENARIO | fault soak"))
    _, title, verdict, took, details = [x.strip() for x in line.split("|", 4)]
    n = int(re.search(r"(\d+) rollouts", title).group(1))
    seed = re.search(r"seed (\d+)", title).group(1)
    secs = float(took.rstrip("s"))
    faults = re.search(r"faults \{(.*?)\}", details).group(1)
    def num(pattern):
        # '#' stands for the figure
        return re.search(pattern.replace("#", r"(\d+)"), details).group(1)

    o = []
    q = o.append
    q("## 9. Randomized fault soak on real Dovecot (the lab)")
    q("")
    q("`scripts/fault-soak.sh` (reruns this section alone; `DBU_SOAK_SEED` repeats a run): rollouts")
    q("in a row on two directors and three backends (Dovecot 2.3.19 on loopback) with live IMAP logins")
    q("and LMTP deliveries, each rollout with 1-5 faults drawn at random times: operator kill (a pass")
    q("cut off after a random number of commands), director restart, exec dropped, status write")
    q("conflict, pod deletion, pause and resume, abort and retry, a human's `director down`. Both")
    q("directors' rings are sampled every 200 ms and judged after each sample.")
    q(f"Measured at commit {commit}.")
    q("")
    q("| figure | value |")
    q("|---|---|")
    q(f"| rollouts, seed, verdict | {n}, {seed}, {verdict} |")
    q(f"| wall time | {secs:.0f} s ({secs / n:.1f} s per rollout) |")
    q(f"| faults by kind | {faults} |")
    q(f"| operator passes killed, retries | {num('# passes killed')}, {num('# retries')} |")
    q(f"| ring samples, most backends out at once | {num('sampled # times')}, {num('most out at once #')} |")
    q(f"| invariant violations | {num('# invariant violations')} |")
    q(f"| messages accepted, accepted and then lost | {num('# messages accepted')}, {num('# lost')} |")
    q(f"| IMAP logins ok, failed | {num('# IMAP logins ok')}, {num('# failed')} |")
    q(f"| kicked sessions that reconnected | {num('# kicked')} |")
    q(f"| hosts left not as they were (drained, down, other count) | {num('# hosts left')} |")
    by_fault = re.search(r"failed logins by the fault applied within (\d+)s before them \{(.*?)\}, (\d+) with no fault", details)
    if by_fault:
        reach, kinds, none = by_fault.groups()
        q(f"| failed logins by the fault applied within {reach} s before each | {kinds or 'none'} |")
        q(f"| failed logins with no fault in force | {none} |")
    q("")
    q("A failed login is put down to the fault applied last within that reach before it: a")
    q("director that restarts refuses logins until it is back, and a backend pod deleted by hand")
    q("refuses its users until it is recreated. Those with no fault in force are the ones that")
    q("could be the operator's; the soak prints the first of them with their errors. That no login")
    q("fails on a backend the operator stopped is also judged by the model and by the real-Dovecot")
    q("tests.")
    return o


def scale_section(rows):
    """Section 10 from benches/scale.rs's rows (also spliced alone by `report.py --scale`)."""
    o = []
    q = o.append
    q("## 10. A large ring end to end (the model's world)")
    q("")
    q("`benches/scale.rs` (`scripts/bench.sh scale` reruns this section alone): one StatefulSet of N")
    q("backends rolled by one DBU through the real engine and ring pass against the model's world")
    q("(tests/model: two directors, the backends and the API server in memory; every command answered")
    q("at once, a pod recreated on the next tick). *Operator* is the wall time less the time the world's")
    q("state was held (its simulation of Dovecot and the API server), per backend; *simulated* is the")
    q("model's clock per backend (1 s per round, 0.5 s per pass). *Writes* are the DBU's status writes per")
    q("step transition (a backend started, a step done; the completion is the one more).")
    q(f"Measured at commit {commit}.")
    q("")
    q("| maxUnavailable | backends | runs | passes / backend | operator ms / backend | world ms / backend | operator's share of the wall time | simulated s / backend | writes / transition |")
    q("|---|---|---|---|---|---|---|---|---|")
    groups = defaultdict(list)
    for r in rows:
        groups[(r["max_unavailable"], r["backends"])].append(r)
    # the operator's part of each run's wall time (the world's simulation is the rest), median
    share = lambda g: statistics.median(
        100 * r["operator_ms_per_backend"] / (r["operator_ms_per_backend"] + r["world_ms_per_backend"]) for r in g)
    for (m, n), g in sorted(groups.items()):
        q(f"| {m} | {n} | {len(g)} | {statistics.median(r['passes_per_backend'] for r in g):.1f} "
          f"| {mmm([r['operator_ms_per_backend'] for r in g])} | {mmm([r['world_ms_per_backend'] for r in g])} "
          f"| {share(g):.0f} % "
          f"| {statistics.median(r['simulated_s_per_backend'] for r in g):.1f} "
          f"| {statistics.median(r.get('status_writes_per_transition', float('nan')) for r in g):.3f} |")
    q("")
    med = lambda m, n: statistics.median(r["operator_ms_per_backend"] for r in groups[(m, n)])
    ns = sorted({n for (_, n) in groups})
    if len(ns) > 1 and (1, ns[0]) in groups and (1, ns[-1]) in groups:
        a, b = med(1, ns[0]), med(1, ns[-1])
        q(f"From {ns[0]} to {ns[-1]} backends the operator's time per backend grows {b / a:.1f}x "
          f"({a:.2f} to {b:.2f} ms): each pass reads every host of the ring and every pod of the")
        q("StatefulSet (the ring's minimum and the director's view are judged over all of them), so a pass")
        passes = statistics.median(r["passes_per_backend"] for r in groups[(1, ns[-1])])
        q(f"costs O(N) and a backend's {passes:.0f} passes O(N) with it. Against the 3 s a backend takes on the idle")
        q(f"real-Dovecot rig (section 1), that is {b / 30:.2f} % at {ns[-1]} backends.")
        q("")
        sa, sb = share(groups[(1, ns[0])]), share(groups[(1, ns[-1])])
        q(f"The operator's share of the wall time per backend is {sa:.0f} % at {ns[0]} backends and {sb:.0f} % at")
        q(f"{ns[-1]}: it stays flat because the world's simulation of the directors and the API server")
        q("grows the same way (a director's `director status` lists every host, as it must for the")
        q("operator to read them). The absolute cost above is what grows, not the operator's part of it.")
        q("")
        q("What a profile (`perf record` of this bench) found and 3b3cb59 removed: passes that were")
        q("O(N^2), a scan of every pod or record per host (the ring pass's pod at each IP, a rejoin's")
        q("records by pod, the ring's minimum counted over every host, the last serving host), the")
        q("director's list parsed into a map per row, the rollout order's key (a name cloned) computed")
        q("per comparison, and two whole statuses cloned to tell whether a write is worth it. At eba2f02")
        q("the operator took 1.06 ms per backend at 10 and 5.87 at 100 (5.5x). What stays O(N) per pass:")
        q("parsing each director's list of N hosts, and the status's N records.")
        q("")
        q("A second profile (at 78a39e1, these rollouts at 10 to 100 backends, 3 runs each; shares of the")
        q("operator's samples, the world's excluded): the allocator 35 % (glibc's malloc and free, and the")
        q("merging of freed small chunks that each large allocation sets off), reading both directors'")
        q("lists 21-23 % (serde_json into rows borrowed from the output; the rows' IPs the only copies),")
        q("the decision 28 % (the rollout order over every pod, a rejoin's look at every pod's record),")
        q("the ring's pass 11 %, of which e1b5183 took a quarter away (the last pass's hosts and the")
        q("backends in maps: a scan of each per host made it O(N^2)). A capacity for the parsed rows,")
        q("tried, changed nothing measurable and was left out. The per-backend cost stays O(N), not flat:")
        q("Dovecot 2.3's `director status` has no form for one host, and every pass needs every host of")
        q("both directors (the ring's minimum, where users are sent, whether the directors agree). A")
        q("cache of an unchanged list would help only this model, where users stay put: on a live ring")
        q("every login and expiry changes some host's `users`.")
        q("")
    w = [r["status_writes_per_transition"] for r in rows if "status_writes_per_transition" in r]
    if w:
        q(f"Status writes: {statistics.median(w):.2f} per step transition (a backend has 11: its start and")
        q("10 steps), the completion one more. A Begin takes its claim of the ring's slot into its own")
        q("pass, a release takes the next Begin (or the completion) into its, and Verify's probe token is")
        q("written with the step that puts a backend at Verify (before: 1.28, three writes of each backend")
        q("were not transitions).")
        q("")
    q("With every step instant, maxUnavailable 3 rolls no faster than 1: a backend in flight that has")
    q("a next command takes the pass, and a new one begins only while those in flight wait (a drain,")
    q("a restart), which is where a real ring overlaps them.")
    return o


if soak_mode:
    splice(9, soak_section(sys.argv[1]))
elif len(sys.argv) > 2 and sys.argv[2] == "--scale":
    splice(10, scale_section(by["scale"]))
elif len(sys.argv) > 2 and sys.argv[2] == "--drain":
    splice(7, drain_section(by["drain"]))
elif len(sys.argv) > 2 and sys.argv[2] == "--cluster":
    # memory and API cost (benches/cluster.sh): sections 2 and 3 replaced, the rest kept
    text = splice(2, section_of(out, 2), open(sys.argv[3]).read().split("\n"))
    text = splice(3, section_of(out, 3), text)
    print("\n".join(text).rstrip("\n"))
elif len(sys.argv) > 2 and sys.argv[2] == "--outage":
    splice(8, outage_section(by["outage"]))
else:
    # sections 9 on come from their own scripts (the fault soak): kept from the file as it was
    kept = []
    if os.path.exists("BENCHMARKS.md"):
        text = open("BENCHMARKS.md").read().split("\n")
        start = next((i for i, l in enumerate(text) if l.startswith("## 9. ")), len(text))
        kept = [""] + text[start:] if start < len(text) else []
    print("\n".join(out + kept).rstrip("\n"))
