#!/usr/bin/env python3
"""Runs the test binaries that `cargo test --no-run --message-format=json` (on stdin) built, up
to JOBS at a time, each from its package's folder as cargo would run it, and prints each one's
output when it ends. cargo runs test binaries one after another; the real-Dovecot binaries spend
their time waiting on Dovecot (each rig has a 127.0.N.0/24 of its own, numbered uniquely across
files), so side by side they take about as long as the longest. Exit status 1 if any failed.

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
        if msg.get("reason") == "compiler-artifact" and msg.get("profile", {}).get("test") and msg.get("executable"):
            tests.append((msg["target"]["name"], msg["target"]["kind"][0], msg["executable"],
                          os.path.dirname(msg["manifest_path"])))
    if not tests:
        sys.exit("run-tests: no test binaries in cargo's output")

    def run(t):
        name, kind, exe, root = t
        env = dict(os.environ, CARGO_MANIFEST_DIR=root)
        start = time.monotonic()
        p = subprocess.run([exe, *args], cwd=root, env=env, capture_output=True, text=True)
        return t, p, time.monotonic() - start

    failed = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for (name, kind, exe, root), p, secs in map(lambda f: f.result(),
                concurrent.futures.as_completed([pool.submit(run, t) for t in tests])):
            print(f"\n---- {kind} {name} ({os.path.relpath(root)}): exit {p.returncode} in {secs:.1f}s", flush=True)
            sys.stdout.write(p.stdout)
            sys.stdout.write(p.stderr)
            sys.stdout.flush()
            if p.returncode != 0:
                failed.append(name)
    if failed:
        sys.exit(f"run-tests: failed: {', '.join(failed)}")
    print(f"\nrun-tests: {len(tests)} test binaries passed")


if __name__ == "__main__":
    main()
