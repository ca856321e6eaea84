"""The operator's own Prometheus metrics, in a registry per operator process (no globals).

Exposed on `metrics_port` by `main.serve`; the chart's optional ServiceMonitor scrapes them.
"""

from __future__ import annotations

import contextlib
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ReconcileResult(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    """A conflict, throttling, a server error or a timeout: kopf retries with backoff."""
    INVALID_SPEC = "invalid_spec"
    """The VoiceService breaks the API rules: Degraded until the spec changes."""
    REJECTED = "rejected"
    """The API server refused a child as invalid (400/422): Degraded until the spec changes."""
    SKIPPED = "skipped"
    """A resync of a VoiceService that failed permanently at this generation: not retried."""


class OperatorMetrics:
    """Counters the handlers and the API client update; one instance per operator."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "voicefleet_operator_reconciles",
            "Reconciles of VoiceServices, by result.",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "voicefleet_operator_reconcile_duration_seconds",
            "Time one reconcile took, API requests included.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.api_errors = Counter(
            "voicefleet_operator_api_errors",
            "Requests the API server refused (by HTTP status; 0: no response).",
            ["code", "method"],
            registry=self.registry,
        )
        self.child_writes = Counter(
            "voicefleet_operator_child_writes",
            "Children of VoiceServices written, by kind and action (create, patch, delete).",
            ["kind", "action"],
            registry=self.registry,
        )
        self.autoscaler_desired_replicas = Gauge(
            "voicefleet_operator_autoscaler_desired_replicas",
            "Replicas the builtin autoscaler last decided on (status.autoscaler), "
            "per VoiceService.",
            ["namespace", "voiceservice"],
            registry=self.registry,
        )
        for result in ReconcileResult:  # every result is exported from the start, at zero
            self.reconciles.labels(result=result.value)

    def count_reconcile(self, result: ReconcileResult, seconds: float) -> None:
        self.reconciles.labels(result=result.value).inc()
        self.reconcile_seconds.observe(seconds)

    def count_api_error(self, status: int, method: str) -> None:
        self.api_errors.labels(code=str(status), method=method).inc()

    def count_child_write(self, kind: str, action: str) -> None:
        self.child_writes.labels(kind=kind, action=action).inc()

    def set_autoscaler_desired(self, namespace: str, name: str, replicas: int | None) -> None:
        if replicas is None:
            self.forget_voiceservice(namespace, name)
        else:
            self.autoscaler_desired_replicas.labels(namespace=namespace, voiceservice=name).set(
                replicas
            )

    def forget_voiceservice(self, namespace: str, name: str) -> None:
        with contextlib.suppress(KeyError):  # never exported, or already forgotten
            self.autoscaler_desired_replicas.remove(namespace, name)
