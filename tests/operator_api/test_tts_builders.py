"""What a VoiceService's text-to-speech becomes in the pod: runtime settings, no model volume
or download for a TTS-only service, and the models status shows."""

from __future__ import annotations

from typing import Any

from tests.operator_api.spec_cases import voiceservice
from voicefleet_operator.builders.deployment import build_deployment
from voicefleet_operator.crd.models import parse_voiceservice


def pod_of(spec: dict[str, Any]) -> dict[str, Any]:
    body = voiceservice(spec)
    if spec.get("model") is None:
        body["spec"].pop("model")
    body["metadata"]["uid"] = "0f6e7c8a-4f8e-4b7d-9a51-7d4c2f0e9b11"  # as the API server sets
    deployment = build_deployment(parse_voiceservice(body), replicas=1)
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in pod["containers"][0]["env"] if "value" in item}


def test_tts_only_service_turns_speech_to_text_off() -> None:
    pod = pod_of({"model": None, "tts": {"voices": ["af_heart"], "defaultFormat": "opus"}})
    env = env_of(pod)
    assert env["VOICEFLEET_STT_ENABLED"] == "false"
    assert "VOICEFLEET_MODEL" not in env
    assert env["VOICEFLEET_TTS_MODEL"] == "kokoro"
    assert env["VOICEFLEET_TTS_VOICES"] == '["af_heart"]'
    assert env["VOICEFLEET_TTS_DEFAULT_FORMAT"] == "opus"
    assert "initContainers" not in pod
    assert [volume["name"] for volume in pod["volumes"]] == ["tmp"]


def test_both_directions_share_one_pod_and_one_gpu() -> None:
    spec = {
        "model": {"name": "large-v3", "source": "download"},
        "gpu": {"type": "NVIDIA-L4"},
        "precision": "int8_float16",
        "tts": {"threads": 2},
    }
    pod = pod_of(spec)
    env = env_of(pod)
    assert (env["VOICEFLEET_MODEL"], env["VOICEFLEET_TTS_MODEL"]) == ("large-v3", "kokoro")
    assert env["VOICEFLEET_TTS_THREADS"] == "2"
    assert "VOICEFLEET_STT_ENABLED" not in env
    assert "VOICEFLEET_TTS_VOICES" not in env  # every installed voice
    assert len(pod["containers"]) == 1
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["initContainers"][0]["name"] == "download-model"
    assert parse_voiceservice(voiceservice(spec)).spec.served_models() == "large-v3+kokoro"


def test_torch_tts_engine_runs_on_the_pods_gpu() -> None:
    on_gpu = env_of(
        pod_of({"model": None, "gpu": {"type": "NVIDIA-L4"}, "tts": {"engine": "torch"}})
    )
    assert (on_gpu["VOICEFLEET_TTS_ENGINE"], on_gpu["VOICEFLEET_TTS_DEVICE"]) == ("torch", "cuda")
    on_cpu = env_of(pod_of({"model": None, "tts": {}}))
    assert on_cpu["VOICEFLEET_TTS_ENGINE"] == "onnx"
    assert "VOICEFLEET_TTS_DEVICE" not in on_cpu
