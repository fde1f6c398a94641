"""Writes an OCI image archive (oci-layout, index, manifest, config, layers) without a daemon.

Shared by scripts/dovecot-image.py and the e2e's node images (pause, CoreDNS). The operator's
image, the one users build, is built by buildah from its Containerfile (scripts/image.sh); these
test images are still written here from an mmdebstrap root or one static binary, which buildah
could do as well (`buildah from scratch`, `add`, `commit`): moving them is left for later. The
archive is what `ctr -n k8s.io images import` takes; containerd names the image from the
`io.containerd.image.name` annotation, so no registry and no re-tagging are needed.
"""
import hashlib
import io
import json
import re
import shlex
import tarfile

# a fixed time keeps archives byte-for-byte reproducible
EPOCH = 0


def containerfile(path):
    """What the image builders take from a Containerfile's final stage (ARG defaults expanded):
    LABELs, USER (None if unset), ENTRYPOINT, and COPYs as (source, destination, --from stage)."""
    text = open(path).read().replace("\\\n", " ")
    final = text[text.rindex("\nFROM ") :] if "\nFROM " in text else text
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", final, re.M))
    expand = lambda v: re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), v)
    labels = {}
    for body in re.findall(r"^LABEL (.+)$", final, re.M):
        for item in shlex.split(body):
            k, v = item.split("=", 1)
            labels[k] = expand(v)
    user = re.search(r"^USER (\S+)$", final, re.M)
    copies = [(src, dst, stage or None) for stage, src, dst in re.findall(r"^COPY (?:--from=(\S+) )?(\S+) (\S+)$", final, re.M)]
    return {
        "labels": labels,
        "user": user.group(1) if user else None,
        "entrypoint": json.loads(re.search(r"^ENTRYPOINT (\[.+\])$", final, re.M).group(1)),
        "copies": copies,
    }


def add_bytes(tar, dst, data, mode=0o644):
    info = tarfile.TarInfo(dst.lstrip("/"))
    info.size, info.mtime, info.mode = len(data), EPOCH, mode
    tar.addfile(info, io.BytesIO(data))


def add_file(tar, src, dst, mode):
    add_bytes(tar, dst, open(src, "rb").read(), mode)


def add_dir(tar, dst, mode=0o755):
    info = tarfile.TarInfo(dst.lstrip("/"))
    info.type, info.mtime, info.mode = tarfile.DIRTYPE, EPOCH, mode
    tar.addfile(info)


def _blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    add_bytes(tar, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write(out, layers, image_config, name, labels=None):
    """Writes `layers` (uncompressed layer tars, bottom first) with `image_config` (the OCI
    config's `config` object) as the image `name` (fully qualified, with its tag)."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]},
    }
    tag = name.rsplit(":", 1)[1]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        layer_descs = [_blob(tar, l) for l in layers]
        config_desc = _blob(tar, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **d} for d in layer_descs],
            "annotations": {"org.opencontainers.image.version": (labels or {}).get("org.opencontainers.image.version", tag)},
        }
        man_desc = _blob(tar, json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", **man_desc,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
            }],
        }
        add_bytes(tar, "index.json", json.dumps(index, sort_keys=True).encode())


def read(archive):
    """(index, manifest, config, [layer bytes]) of an archive `write` made."""
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    blobs = {n.split("/")[-1]: d for n, d in files.items() if n.startswith("blobs/sha256/")}
    bad = [h for h, d in blobs.items() if hashlib.sha256(d).hexdigest() != h]
    if bad or json.loads(files["oci-layout"]) != {"imageLayoutVersion": "1.0.0"}:
        raise SystemExit(f"{archive}: bad oci-layout or blobs not matching their digests: {bad}")
    index = json.loads(files["index.json"])
    get = lambda d: blobs[d["digest"].split(":")[1]]
    manifest = json.loads(get(index["manifests"][0]))
    config = json.loads(get(manifest["config"]))
    layers = [get(l) for l in manifest["layers"]]
    return index, manifest, config, layers
