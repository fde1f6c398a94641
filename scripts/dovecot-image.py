#!/usr/bin/python3
"""Builds the Dovecot image of deploy/images/dovecot as an OCI archive, without a daemon.

  scripts/dovecot-image.py build VERSION OUT.tar [NAME]   # VERSION 2.3.19 (bookworm) or 2.3.21 (bookworm-backports)

The same recipe as deploy/images/dovecot/Containerfile: a minbase Debian 12 (mmdebstrap) with the
packages listed in deploy/images/dovecot/packages from the version's suite, supervisor.sh as
/usr/local/sbin/dovecot-supervisor, and the Containerfile's ENTRYPOINT and LABELs (read from it).
The image is named NAME (default docker.io/library/dbu-dovecot:VERSION) for containerd's import.
After the build it runs `dovecot --version` in the root and refuses a version other than asked.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oci  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "deploy/images/dovecot")
SUITES = {"2.3.19": "bookworm", "2.3.21": "bookworm-backports"}
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")


def recipe():
    cf = oci.containerfile(os.path.join(RECIPE, "Containerfile"))
    copies = {src: dst for src, dst, _ in cf["copies"]}
    packages = [l.strip() for l in open(os.path.join(RECIPE, "packages")) if l.strip() and not l.startswith("#")]
    return cf["labels"], cf["entrypoint"], copies["supervisor.sh"], packages


def build(version, out, name):
    suite = SUITES.get(version) or sys.exit(f"unknown version {version}: one of {sorted(SUITES)}")
    labels, entry, supervisor, packages = recipe()
    sources = [f"deb {MIRROR} bookworm main"]
    include = packages
    if suite != "bookworm":
        sources.append(f"deb {MIRROR} {suite} main")
        include = [f"{p}/{suite}" for p in packages]
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        subprocess.run([
            "mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", "--include=" + ",".join(include),
            # documentation is not needed to run Dovecot; a smaller layer imports faster
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
            f"--customize-hook=copy-in {os.path.join(RECIPE, 'supervisor.sh')} /usr/local/sbin",
            f"--customize-hook=mv \"$1/usr/local/sbin/supervisor.sh\" \"$1{supervisor}\"",
            "bookworm", root, *sources,
        ], check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "0"})
        got = subprocess.run(["chroot", root, "dovecot", "--version"], check=True, capture_output=True, text=True).stdout.strip()
        if not got.startswith(version + "."):
            raise SystemExit(f"{suite} gave Dovecot {got}, not {version}")
        layer = os.path.join(tmp, "layer.tar")
        subprocess.run(["tar", "--numeric-owner", "--sort=name", "--mtime=@0", "--xattrs", "-C", root, "-cf", layer, "."], check=True)
        data = open(layer, "rb").read()
    labels = {**labels, "org.opencontainers.image.version": got.split()[0]}
    oci.write(out, [data], {"Entrypoint": entry, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                            "Labels": labels}, name, labels)
    print(f"{out}: {name}, Dovecot {got} from {suite} ({len(data) >> 20} MiB layer)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["build"] and len(sys.argv) in (4, 5):
        build(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) == 5 else f"docker.io/library/dbu-dovecot:{sys.argv[2]}")
    else:
        raise SystemExit(__doc__)
