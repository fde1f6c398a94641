#!/usr/bin/python3
"""Every relative link in README.md and docs/ leads somewhere: the file exists, and an #anchor is a
heading of that file (GitHub's slug) or an explicit <a id>. Run from the repository root."""
import os
import re
import sys

FILES = ["README.md"] + [os.path.join(d, f) for d, _, fs in os.walk("docs") for f in fs if f.endswith(".md")]


def anchors(path):
    text = open(path).read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    found = set(re.findall(r'<a id="([^"]+)"', text))
    seen = {}
    for h in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", h.strip().lower().replace("`", "")).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


bad = []
checked = 0
for f in FILES:
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", open(f).read(), flags=re.S))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
        checked += 1
        if not os.path.exists(dest):
            bad.append(f"{f}: {target}: no such file")
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            bad.append(f"{f}: {target}: no such anchor")
for b in bad:
    print("FAIL - " + b)
print(f"docs: {checked} links checked, {len(bad)} broken")
sys.exit(1 if bad else 0)
