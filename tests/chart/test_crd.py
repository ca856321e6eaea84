"""The chart ships the very CRD the operator generates (Helm installs crds/ on first install)."""

from __future__ import annotations

from pathlib import Path


def test_chart_crd_is_byte_identical_to_the_root_crd(repo_root: Path, chart_dir: Path) -> None:
    root = repo_root / "crds" / "voicefleet.io_voiceservices.yaml"
    chart = chart_dir / "crds" / "voicefleet.io_voiceservices.yaml"
    assert root.is_file(), f"{root} is missing: generate it with `voicefleet crd > {root}`"
    assert chart.read_bytes() == root.read_bytes(), f"copy it: cp {root} {chart}"


def test_the_chart_crds_folder_holds_only_the_voiceservice_crd(chart_dir: Path) -> None:
    assert sorted(p.name for p in (chart_dir / "crds").iterdir()) == [
        "voicefleet.io_voiceservices.yaml"
    ]
