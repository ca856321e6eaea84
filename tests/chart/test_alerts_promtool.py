"""The PrometheusRule's alerts, checked and exercised by the real promtool.

`promtool check rules` parses every expression and template; `promtool test rules` feeds
series through the rules and checks which alerts fire, with which labels and summaries.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

RELEASE_NAMESPACE = "voicefleet-system"
RULE_VALUES = {"monitoring": {"prometheusRule": {"enabled": True}}}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y --no-install-recommends prometheus")
    return path


@pytest.fixture(scope="module")
def rule_groups(render: Any) -> list[dict[str, Any]]:
    (rule,) = [o for o in render(RULE_VALUES) if o["kind"] == "PrometheusRule"]
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


@pytest.fixture(scope="module")
def rules_file(rule_groups: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups}))
    return path


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    """One promtool input series: name{labels} with values in promtool's expanding notation."""
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def description(rule_groups: list[dict[str, Any]], alert: str) -> str:
    for group in rule_groups:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                text: str = rule["annotations"]["description"]
                return text
    raise KeyError(alert)


def test_promtool_checks_the_rules(promtool: str, rules_file: Path) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_the_alerts_fire_on_the_conditions_they_name(
    promtool: str, rules_file: Path, rule_groups: list[dict[str, Any]]
) -> None:
    def alert(name: str, labels: dict[str, str], summary: str) -> dict[str, Any]:
        return {
            "exp_labels": labels,
            "exp_annotations": {"summary": summary, "description": description(rule_groups, name)},
        }

    speech = {"namespace": "speech"}
    tests = [
        {
            "interval": "1m",
            "input_series": [
                # tiny: 15 of 16 places taken for 20 minutes; base: 4 of 16.
                series(
                    "voicefleet_queue_depth", "15x20", namespace="speech", service="tiny", pod="t-1"
                ),
                series(
                    "voicefleet_queue_capacity",
                    "16x20",
                    namespace="speech",
                    service="tiny",
                    pod="t-1",
                ),
                series(
                    "voicefleet_queue_depth", "4x20", namespace="speech", service="base", pod="b-1"
                ),
                series(
                    "voicefleet_queue_capacity",
                    "16x20",
                    namespace="speech",
                    service="base",
                    pod="b-1",
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "VoiceServiceQueueSaturated", "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": "VoiceServiceQueueSaturated",
                    "exp_alerts": [
                        alert(
                            "VoiceServiceQueueSaturated",
                            {**speech, "service": "tiny", "severity": "warning"},
                            "speech/tiny: request queue above 93.75% of capacity",
                        )
                    ],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                # KEDA's HPA of a VoiceService, pinned at 5 of 5; an unrelated HPA also pinned.
                series(
                    "kube_horizontalpodautoscaler_status_current_replicas",
                    "5x20",
                    namespace="speech",
                    horizontalpodautoscaler="keda-hpa-tiny",
                ),
                series(
                    "kube_horizontalpodautoscaler_spec_max_replicas",
                    "5x20",
                    namespace="speech",
                    horizontalpodautoscaler="keda-hpa-tiny",
                ),
                series(
                    "kube_horizontalpodautoscaler_status_current_replicas",
                    "3x20",
                    namespace="speech",
                    horizontalpodautoscaler="web",
                ),
                series(
                    "kube_horizontalpodautoscaler_spec_max_replicas",
                    "3x20",
                    namespace="speech",
                    horizontalpodautoscaler="web",
                ),
                series("voicefleet_ready", "1x20", namespace="speech", service="tiny", pod="t-1"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "VoiceServiceReplicasPinnedAtMax",
                    "exp_alerts": [
                        alert(
                            "VoiceServiceReplicasPinnedAtMax",
                            {
                                **speech,
                                "service": "tiny",
                                "horizontalpodautoscaler": "keda-hpa-tiny",
                                "severity": "warning",
                            },
                            "speech/keda-hpa-tiny: replicas pinned at the autoscaler's maximum",
                        )
                    ],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                # t-1 never became ready; t-2 is draining after SIGTERM, which is expected.
                series("voicefleet_ready", "0x20", namespace="speech", service="tiny", pod="t-1"),
                series(
                    "voicefleet_draining", "0x20", namespace="speech", service="tiny", pod="t-1"
                ),
                series("voicefleet_ready", "0x20", namespace="speech", service="tiny", pod="t-2"),
                series(
                    "voicefleet_draining", "1x20", namespace="speech", service="tiny", pod="t-2"
                ),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "VoiceServicePodNotReady",
                    "exp_alerts": [
                        alert(
                            "VoiceServicePodNotReady",
                            {**speech, "service": "tiny", "pod": "t-1", "severity": "warning"},
                            "speech/t-1 has not been ready for a while",
                        )
                    ],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                # 10 requests a minute, 1 of them a 500: 10 % errors.
                series(
                    "voicefleet_requests_total",
                    "0+9x30",
                    namespace="speech",
                    service="tiny",
                    pod="t-1",
                    endpoint="/v1/audio/transcriptions",
                    status="200",
                ),
                series(
                    "voicefleet_requests_total",
                    "0+1x30",
                    namespace="speech",
                    service="tiny",
                    pod="t-1",
                    endpoint="/v1/audio/transcriptions",
                    status="500",
                ),
                series(
                    "voicefleet_requests_total",
                    "0+10x30",
                    namespace="speech",
                    service="base",
                    pod="b-1",
                    endpoint="/v1/audio/transcriptions",
                    status="200",
                ),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "20m",
                    "alertname": "VoiceServiceHighErrorRate",
                    "exp_alerts": [
                        alert(
                            "VoiceServiceHighErrorRate",
                            {**speech, "service": "tiny", "severity": "critical"},
                            "speech/tiny: 10% of requests fail with 5xx",
                        )
                    ],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                series(
                    "voicefleet_gpu_memory_used_bytes",
                    "79e9x20",
                    namespace="speech",
                    service="large",
                    pod="l-1",
                    gpu="0",
                ),
                series(
                    "voicefleet_gpu_memory_total_bytes",
                    "80e9x20",
                    namespace="speech",
                    service="large",
                    pod="l-1",
                    gpu="0",
                ),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "15m",
                    "alertname": "VoiceServiceGPUMemoryNearFull",
                    "exp_alerts": [
                        alert(
                            "VoiceServiceGPUMemoryNearFull",
                            {
                                **speech,
                                "service": "large",
                                "pod": "l-1",
                                "gpu": "0",
                                "severity": "warning",
                            },
                            "speech/l-1: GPU 0 memory 98.75% used",
                        )
                    ],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                # Every audio second takes 1.5 s: all observations land in the le=2 bucket.
                *[
                    series(
                        "voicefleet_real_time_factor_bucket",
                        f"0+{count}x30",
                        namespace="speech",
                        service="cpu",
                        pod="c-1",
                        le=le,
                    )
                    for le, count in (("0.5", 0), ("1", 0), ("2", 6), ("+Inf", 6))
                ],
            ],
            "alert_rule_test": [
                {
                    "eval_time": "25m",
                    "alertname": "VoiceServiceSlowerThanRealTime",
                    "exp_alerts": [
                        alert(
                            "VoiceServiceSlowerThanRealTime",
                            {**speech, "service": "cpu", "severity": "warning"},
                            "speech/cpu: p90 real-time factor 1.90",
                        )
                    ],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                # Every first audio takes 2 to 3 s: all observations land in the le=3 bucket.
                *[
                    series(
                        "voicefleet_tts_time_to_first_audio_seconds_bucket",
                        f"0+{count}x30",
                        namespace="speech",
                        service="kokoro",
                        pod="k-1",
                        le=le,
                    )
                    for le, count in (("1", 0), ("2", 0), ("3", 6), ("+Inf", 6))
                ],
            ],
            "alert_rule_test": [
                {
                    "eval_time": "25m",
                    "alertname": "VoiceServiceSlowFirstAudio",
                    "exp_alerts": [
                        alert(
                            "VoiceServiceSlowFirstAudio",
                            {**speech, "service": "kokoro", "severity": "warning"},
                            "speech/kokoro: p95 time to first audio 2.95 s",
                        )
                    ],
                }
            ],
        },
        {
            "interval": "1m",
            "input_series": [
                series(
                    "kube_deployment_status_replicas_available",
                    "1x5 0x15",
                    namespace=RELEASE_NAMESPACE,
                    deployment="vf-voicefleet",
                ),
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "VoicefleetOperatorUnavailable", "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": "VoicefleetOperatorUnavailable",
                    "exp_alerts": [
                        alert(
                            "VoicefleetOperatorUnavailable",
                            {
                                "namespace": RELEASE_NAMESPACE,
                                "deployment": "vf-voicefleet",
                                "severity": "critical",
                            },
                            f"voicefleet operator {RELEASE_NAMESPACE}/vf-voicefleet has no "
                            "available replica",
                        )
                    ],
                },
            ],
        },
    ]
    test_file = rules_file.parent / "alerts_test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests}
        )
    )
    result = subprocess.run(
        [promtool, "test", "rules", test_file.name],
        cwd=rules_file.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
