#!/usr/bin/env python3
"""Runs the test binaries that `cargo test --no-run --message-format=json` (on stdin) built, up
to JOBS at a time, each from its package's folder as cargo would run it, and prints each one's
output when it ends. cargo runs test binaries one after another; the real-Dovecot binaries spend
their time waiting on Dovecot (each rig has a 127.0.N.0/24 of its own, numbered uniquely across
files), so side by side they take about as long as the longest. The longest start first, by
their times in the last run (kept in $DBU_CACHE, else ~/.cache/dovecot-upgrade-operator,
test-times.json; a binary not timed yet counts as longest): in cargo's order the fault soak
(460 s) started third and the whole took 577 s. Exit status 1 if any failed.

  cargo test --no-run --message-format=json ... | run-tests.py JOBS [TEST ARGS...]
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import time


def main():
    jobs = int(sys.argv[1])
    args = sys.argv[2:]
    tests = []
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        # benches are built for clippy's lints (scripts/test.sh), measured by scripts/bench.sh
        if (msg.get("reason") == "compiler-artifact" and msg.get("profile", {}).get("test")
                and msg.get("executable") and msg["target"]["kind"][0] != "bench"):
            tests.append((msg["target"]["name"], msg["target"]["kind"][0], msg["executable"],
                          os.path.dirname(msg["manifest_path"])))
    if not tests:
        sys.exit("run-tests: no test binaries in cargo's output")

    cache = os.environ.get("DBU_CACHE") or os.path.expanduser("~/.cache/dovecot-upgrade-operator")
    times_file = os.path.join(cache, "test-times.json")
    try:
        with open(times_file) as f:
            last = json.load(f)
    except (OSError, ValueError):
        last = {}
    # by kind and name: the executable's hash changes with every build
    key = lambda t: f"{t[1]} {t[0]}"
    tests.sort(key=lambda t: -last.get(key(t), float("inf")))

    def run(t):
        name, kind, exe, root = t
        env = dict(os.environ, CARGO_MANIFEST_DIR=root)
        start = time.monotonic()
        p = subprocess.run([exe, *args], cwd=root, env=env, capture_output=True, text=True)
        return t, p, time.monotonic() - start

    failed = []
    times = {}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for (name, kind, exe, root), p, secs in map(lambda f: f.result(),
                concurrent.futures.as_completed([pool.submit(run, t) for t in tests])):
            times[f"{kind} {name}"] = round(secs, 1)
            print(f"\n---- {kind} {name} ({os.path.relpath(root)}): exit {p.returncode} in {secs:.1f}s", flush=True)
            sys.stdout.write(p.stdout)
            sys.stdout.write(p.stderr)
            sys.stdout.flush()
            if p.returncode != 0:
                failed.append(name)
    try:
        os.makedirs(cache, exist_ok=True)
        with open(times_file + ".tmp", "w") as f:
            json.dump(times, f, indent=0, sort_keys=True)
        os.replace(times_file + ".tmp", times_file)
    except OSError as e:
        print(f"run-tests: could not keep the test times ({e}); the next run starts in cargo's order", file=sys.stderr)
    if failed:
        sys.exit(f"run-tests: failed: {', '.join(failed)}")
    print(f"\nrun-tests: {len(tests)} test binaries passed")


if __name__ == "__main__":
    main()
