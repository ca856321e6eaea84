"""Operator settings, from `VOICEFLEET_OPERATOR_*` environment variables and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from voicefleet_operator.crd.models import DEFAULT_RUNTIME_IMAGE


class OperatorSettings(BaseSettings):
    """How the operator watches, stores its progress, retries, and talks to the API server."""

    model_config = SettingsConfigDict(env_prefix="VOICEFLEET_OPERATOR_", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to watch; empty with all_namespaces unset "
        "means the namespace of the kubeconfig context.",
    )
    all_namespaces: bool = Field(False, description="Watch every namespace (cluster-wide).")
    standalone: bool = Field(
        False, description="No peering: one replica, or a laptop. Off: replicas elect one leader."
    )
    peering_name: str = Field(
        "voicefleet", description="Name of the KopfPeering/ClusterKopfPeering object."
    )
    peering_priority: int = Field(
        0,
        ge=-900,
        le=900,
        description="Higher priority installations pause lower ones within the same peering "
        "(among replicas of one installation, the one that started first acts).",
    )
    peering_lifetime: int = Field(
        60,
        ge=2,
        description="Seconds a replica's peering entry lives without a keep-alive: how long "
        "the others wait before taking over from one that died without leaving.",
    )
    finalizer: str = Field("voicefleet.io/finalizer", description="Finalizer kopf manages.")
    annotation_prefix: str = Field(
        "voicefleet.io", description="Prefix of kopf's progress and last-handled annotations."
    )
    server_timeout: int = Field(
        300,
        gt=0,
        # Whole seconds: kube-apiserver refuses a watch with timeoutSeconds=300.0 (400).
        description="Seconds the API server keeps one watch open (a whole number).",
    )
    client_timeout: float = Field(
        330.0, gt=0, description="Seconds the client waits on a watch before reconnecting."
    )
    connect_timeout: float = Field(30.0, gt=0, description="Seconds to connect to the API.")
    request_timeout: float = Field(60.0, gt=0, description="Seconds for one API request.")
    liveness_endpoint: str | None = Field(
        None, description="Where kopf serves its liveness probe, e.g. http://0.0.0.0:8080/healthz."
    )
    metrics_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="Port of the operator's Prometheus /metrics endpoint; 0 turns it off.",
    )
    metrics_host: str = Field(
        # Prometheus scrapes the pod's IP, so in a pod every interface is the right default.
        "0.0.0.0",  # noqa: S104
        description="Address the /metrics endpoint listens on (0.0.0.0: every one).",
    )
    autoscaler_interval: float = Field(
        15.0, gt=0, description="Seconds between two runs of the builtin autoscaler."
    )
    resync_interval: float = Field(
        60.0,
        gt=0,
        description="Seconds between two full reconciles of every VoiceService: "
        "repairs drift whose watch event was missed or failed.",
    )
    child_cache_seconds: float = Field(
        600.0,
        gt=0,
        description="Seconds a child seen on the operator's watches is trusted without "
        "reading it again (bounds how long a deletion missed while a watch was cut goes "
        "unrepaired).",
    )
    backoff: float = Field(
        5.0, gt=0, description="Seconds before retrying after a conflict or a server error."
    )
    backoff_max: float = Field(300.0, gt=0, description="Upper bound of the retry delay.")
    idle_timeout: float = Field(
        5.0, gt=0, description="Seconds an idle per-object worker lives before it is released."
    )
    posting_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest log level also posted as a Kubernetes Event."
    )
    default_runtime_image: str = Field(
        DEFAULT_RUNTIME_IMAGE, description="Runtime image when a VoiceService names none."
    )
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file; unset: $KUBECONFIG, ~/.kube/config, or in-cluster."
    )

    @model_validator(mode="after")
    def _check_timeouts(self) -> OperatorSettings:
        if self.client_timeout <= self.server_timeout:
            raise ValueError(
                "client_timeout must exceed server_timeout, or every watch ends as a client error"
            )
        if self.backoff > self.backoff_max:
            raise ValueError("backoff must not exceed backoff_max")
        return self
