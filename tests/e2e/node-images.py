#!/usr/bin/python3
"""The real node's own images, as OCI archives for `ctr images import`: pause and CoreDNS.

  node-images.py pause BINARY TAG OUT.tar     # registry.k8s.io/pause:TAG (containerd's pinned sandbox image)
  node-images.py coredns BINARY TAG OUT.tar   # registry.k8s.io/coredns/coredns:vTAG

Each is one static binary on an empty root, as upstream ships them.
"""
import io
import os
import sys
import tarfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../scripts"))
import oci  # noqa: E402


def layer(binary, dst):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        oci.add_dir(tar, "/etc")
        oci.add_bytes(tar, "/etc/passwd", b"root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n")
        oci.add_file(tar, binary, dst, 0o755)
    return buf.getvalue()


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] not in ("pause", "coredns"):
        raise SystemExit(__doc__)
    kind, binary, tag, out = sys.argv[1:]
    if kind == "pause":
        oci.write(out, [layer(binary, "/pause")], {"Entrypoint": ["/pause"], "User": "65535:65535"}, f"registry.k8s.io/pause:{tag}")
    else:
        oci.write(out, [layer(binary, "/coredns")], {"Entrypoint": ["/coredns"], "WorkingDir": "/"},
                  f"registry.k8s.io/coredns/coredns:v{tag}")
    print(f"{out}: {kind} {tag}")
