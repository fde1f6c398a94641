#!/usr/bin/python3
"""Builds the operator's image as an OCI archive without a daemon or registry, and checks it.

  scripts/operator-image.py build BINARY OUT.tar [NAME:TAG]   # e.g. target/release/dovecot-upgrade-operator
  scripts/operator-image.py check OUT.tar          # structure, digests, agreement, a real start

The image is what deploy/images/operator/Containerfile makes, from the same parts: the release
binary at /usr/local/bin, the shared libraries it links (taken from this Debian 12 host, as the
distroless cc-debian12 base carries Debian 12's), CA certificates, a nonroot user 65532, and the
Containerfile's USER, ENTRYPOINT and LABELs (read from it, so the two cannot drift). Its name is
the chart's default image (`dovecot-upgrade-operator:<appVersion>`), which containerd takes from
the `io.containerd.image.name` annotation on `ctr -n k8s.io images import`.
"""
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oci  # noqa: E402
from oci import add_bytes, add_dir, add_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTAINERFILE = os.path.join(ROOT, "deploy/images/operator/Containerfile")
CHART = os.path.join(ROOT, "charts/dovecot-upgrade-operator")
BIN = "/usr/local/bin/dovecot-upgrade-operator"


def app_version():
    for line in open(os.path.join(CHART, "Chart.yaml")):
        if line.startswith("appVersion:"):
            return line.split(":", 1)[1].strip().strip('"')
    raise SystemExit("no appVersion in Chart.yaml")


def chart_image():
    repo = None
    for line in open(os.path.join(CHART, "values.yaml")):
        m = re.match(r"\s+repository:\s*(\S+)", line)
        if m and repo is None:
            repo = m.group(1)
    return f"{repo}:{app_version()}"


def containerfile():
    """USER, ENTRYPOINT, LABELs and what is copied from the build stage, of the Containerfile."""
    cf = oci.containerfile(CONTAINERFILE)
    cf["copied"] = [dst for _, dst, stage in cf["copies"] if stage == "build"]
    return cf


def libraries(binary):
    """The ELF interpreter and libraries the binary links, as ldd resolves them here."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            paths.append(m.group(1))
    return paths


def layer(binary):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = {"/etc", "/tmp", "/usr", "/usr/local", "/usr/local/bin", "/etc/ssl", "/etc/ssl/certs", "/home", "/home/nonroot"}
        libs = libraries(binary)
        for lib in libs:
            d = os.path.dirname(lib)
            while d != "/":
                dirs.add(d)
                d = os.path.dirname(d)
        for d in sorted(dirs):
            add_dir(tar, d, 0o1777 if d == "/tmp" else 0o755)
        add_bytes(tar, "/etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        add_bytes(tar, "/etc/group", b"root:x:0:\nnonroot:x:65532:\n")
        add_file(tar, "/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-certificates.crt", 0o644)
        for lib in libs:
            add_file(tar, os.path.realpath(lib), lib, 0o755)
        add_file(tar, binary, BIN, 0o755)
    return buf.getvalue()


def build(binary, out, name=None):
    """NAME:TAG (default: the chart's image) names an older release's binary packed the same way."""
    cf = containerfile()
    if cf["copied"] != [BIN]:
        raise SystemExit(f"the Containerfile copies {cf['copied']}, this builder {BIN}")
    data = layer(binary)
    name = name or chart_image()
    if name != chart_image():
        cf["labels"]["org.opencontainers.image.version"] = name.rsplit(":", 1)[1]
    oci.write(out, [data], {
        "User": cf["user"],
        "Entrypoint": cf["entrypoint"],
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
        "WorkingDir": "/home/nonroot",
        "Labels": cf["labels"],
    }, f"docker.io/library/{name}", cf["labels"])
    print(f"{out}: {name} ({len(data)} bytes of layer)")


def check(archive):
    failures = []

    def ok(cond, what):
        print(("ok   - " if cond else "FAIL - ") + what)
        if not cond:
            failures.append(what)

    index, manifest, config, layers = oci.read(archive)
    m = index["manifests"][0]
    ok(m["annotations"]["io.containerd.image.name"] == f"docker.io/library/{chart_image()}",
       f"named as the chart's default image ({chart_image()})")
    cf = containerfile()
    ok(config["config"]["User"] == cf["user"] and cf["user"].split(":")[0] != "0", f"non-root user {cf['user']}, as the Containerfile")
    ok(config["config"]["Entrypoint"] == cf["entrypoint"], "entrypoint as the Containerfile")
    ok(config["config"]["Labels"] == cf["labels"], "labels as the Containerfile")
    ok(cf["labels"].get("org.opencontainers.image.version") == app_version(), "labelled with the chart's appVersion")
    layer = layers[0]
    ok(len(layers) == 1 and "sha256:" + hashlib.sha256(layer).hexdigest() == config["rootfs"]["diff_ids"][0], "one layer, its diff_id")
    with tempfile.TemporaryDirectory() as root:
        with tarfile.open(fileobj=io.BytesIO(layer)) as t:
            names = sorted(n.name for n in t.getmembers() if n.isfile())
            # Debian 12's python 3.11.2 has no extraction filters: refuse what one would
            bad = [n.name for n in t.getmembers() if n.name.startswith("/") or ".." in n.name.split("/") or n.issym() or n.islnk()]
            if bad:
                raise SystemExit(f"unsafe members in the layer: {bad}")
            t.extractall(root)
        os.chmod(root, 0o755)  # the image's / as a runtime makes it, not mkdtemp's 0700
        ok(not any(n.startswith(("bin/sh", "usr/bin/", "bin/")) for n in names), f"no shell or tools: {names}")
        # the image starts: its binary runs in its own root as its user, with only these files
        r = subprocess.run(["chroot", "--userspec=65532:65532", root, BIN, "--version"], capture_output=True, text=True)
        ok(r.returncode == 0 and r.stdout.strip() == f"dovecot-upgrade-operator {app_version()}",
           f"the binary starts in the image's root as 65532: {r.stdout.strip() or r.stderr.strip()}")
    print(f"{len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"] and len(sys.argv) in (4, 5):
        build(*sys.argv[2:])
    elif sys.argv[1:2] == ["check"] and len(sys.argv) == 3:
        check(sys.argv[2])
    else:
        raise SystemExit(__doc__)
