"""Where the API server is and how to authenticate, from a kubeconfig or the pod's account.

The `kubernetes` package parses the configuration here (it understands every kubeconfig flavour:
tokens, client certificates, exec plugins) and keeps the bearer token current: it re-reads a
rotated service-account token file (once a minute) and re-runs an exec plugin once the credential
it gave expires. So the token is asked for at each request, never frozen.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class ClusterConnection:
    server: str
    bearer: Callable[[], str | None] = field(default=lambda: None, compare=False)
    """The bearer token right now (None: client certificates only)."""
    ca_path: str | None = None
    insecure: bool = False
    client_cert_path: str | None = None
    client_key_path: str | None = None
    default_namespace: str | None = None

    @property
    def token(self) -> str | None:
        return self.bearer()

    def __repr__(self) -> str:  # the token must never reach a log line
        return f"ClusterConnection(server={self.server!r})"


def _bearer_token(configuration: Any) -> str | None:
    """The configuration's current token; asking runs its refresh hook (rotated file, exec)."""
    # Both loaders store "Bearer <token>" (in-cluster spells it "bearer").
    header = configuration.get_api_key_with_prefix("BearerToken") or ""
    scheme, _, value = str(header).partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_DIR.is_dir()


def load_connection(kubeconfig: Path | None = None) -> ClusterConnection:
    """The explicit kubeconfig, else the pod's service account, else $KUBECONFIG or ~/.kube."""
    from kubernetes import client, config

    configuration = client.Configuration()
    namespace: str | None = None
    if kubeconfig is None and _in_cluster():
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        namespace_file = SERVICE_ACCOUNT_DIR / "namespace"
        if namespace_file.exists():
            namespace = namespace_file.read_text().strip() or None
    else:
        # Read $KUBECONFIG now, not at import time as the kubernetes package would.
        path = kubeconfig or Path(
            os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
        )
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path.expanduser()),
            client_configuration=configuration,
            persist_config=False,
        )
        _, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=str(path.expanduser())
        )
        namespace = (active or {}).get("context", {}).get("namespace")
    return ClusterConnection(
        server=str(configuration.host).rstrip("/"),
        bearer=lambda: _bearer_token(configuration),
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        client_cert_path=configuration.cert_file or None,
        client_key_path=configuration.key_file or None,
        default_namespace=namespace,
    )
