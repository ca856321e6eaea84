"""What the API server would refuse in a child, found before the child is sent.

The models already refuse every spec known to produce such a child; this is the last line:
a child that still breaks a rule here is reported as InvalidSpec (a bug in the models or the
builders, named precisely) instead of a 422 that the user sees only in the operator's log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from voicefleet_operator.crd.quantity import parse_quantity
from voicefleet_operator.crd.syntax import (
    ANNOTATIONS_MAX_BYTES,
    annotations_size,
    is_dns_label,
    is_dns_subdomain,
    is_env_name,
    is_label_key,
    is_label_value,
    is_relative_path,
)

DNS_LABEL_NAMED_KINDS = ("Service",)
"""Kinds whose names must be RFC 1035 labels (they become DNS names)."""


def _label_problems(where: str, labels: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, value in labels.items():
        if not is_label_key(key):
            problems.append(f"{where}: {key!r} is not a label key")
        if not isinstance(value, str) or not is_label_value(value):
            problems.append(
                f"{where}.{key}: {value!r} is not a label value (63 characters of "
                "letters, digits, -, _ and ., alphanumeric at both ends)"
            )
    return problems


def _annotation_problems(where: str, annotations: Mapping[str, Any]) -> list[str]:
    problems = [
        f"{where}: {key!r} is not an annotation key" for key in annotations if not is_label_key(key)
    ]
    if annotations_size(annotations) > ANNOTATIONS_MAX_BYTES:
        problems.append(f"{where} exceed {ANNOTATIONS_MAX_BYTES} bytes")
    return problems


def _metadata_problems(where: str, metadata: Mapping[str, Any]) -> list[str]:
    return _label_problems(f"{where}.labels", metadata.get("labels") or {}) + _annotation_problems(
        f"{where}.annotations", metadata.get("annotations") or {}
    )


def _resource_problems(where: str, resources: Mapping[str, Any]) -> list[str]:
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    problems = []
    for name in sorted(set(requests) & set(limits)):
        if parse_quantity(str(requests[name])) > parse_quantity(str(limits[name])):
            problems.append(
                f"{where}: requests.{name} {requests[name]} exceeds limits.{name} {limits[name]}"
            )
    return problems


def _container_problems(where: str, container: Mapping[str, Any], volumes: set[str]) -> list[str]:
    problems = []
    if not is_dns_label(str(container.get("name", ""))):
        problems.append(f"{where}: container name {container.get('name')!r} is not a DNS label")
    problems += _resource_problems(f"{where}.resources", container.get("resources") or {})
    for variable in container.get("env") or []:
        if not is_env_name(str(variable.get("name", ""))):
            problems.append(f"{where}: {variable.get('name')!r} is not an env variable name")
    mount_paths = [m.get("mountPath") for m in container.get("volumeMounts") or []]
    if len(mount_paths) != len(set(mount_paths)):
        problems.append(f"{where}: two volumeMounts share a mountPath")
    for mount in container.get("volumeMounts") or []:
        if mount.get("name") not in volumes:
            problems.append(f"{where}: volumeMount {mount.get('name')!r} names no volume")
        sub_path = mount.get("subPath")
        if sub_path is not None and not is_relative_path(str(sub_path)):
            problems.append(f"{where}: subPath {sub_path!r} must be relative, without ..")
    return problems


def _toleration_problems(where: str, tolerations: Iterable[Mapping[str, Any]]) -> list[str]:
    problems = []
    for index, toleration in enumerate(tolerations):
        at = f"{where}[{index}]"
        operator = toleration.get("operator", "Equal")
        if not toleration.get("key") and operator != "Exists":
            problems.append(f"{at}: a toleration without a key needs operator Exists")
        if operator == "Exists" and toleration.get("value"):
            problems.append(f"{at}: operator Exists takes no value")
        if "tolerationSeconds" in toleration and toleration.get("effect") != "NoExecute":
            problems.append(f"{at}: tolerationSeconds needs effect NoExecute")
    return problems


def _pod_problems(
    where: str, template: Mapping[str, Any], selector: Mapping[str, Any]
) -> list[str]:
    metadata = template.get("metadata") or {}
    pod = template.get("spec") or {}
    problems = _metadata_problems(f"{where}.metadata", metadata)
    labels = metadata.get("labels") or {}
    if any(labels.get(key) != value for key, value in selector.items()):
        problems.append(f"{where}: the pod labels do not match the selector")
    volume_names = [v.get("name") for v in pod.get("volumes") or []]
    if len(volume_names) != len(set(volume_names)):
        problems.append(f"{where}: two volumes share a name")
    problems += [
        f"{where}: volume name {name!r} is not a DNS label"
        for name in volume_names
        if not is_dns_label(str(name))
    ]
    for kind in ("initContainers", "containers"):
        for index, container in enumerate(pod.get(kind) or []):
            problems += _container_problems(
                f"{where}.spec.{kind}[{index}]", container, set(map(str, volume_names))
            )
    problems += _label_problems(f"{where}.spec.nodeSelector", pod.get("nodeSelector") or {})
    problems += _toleration_problems(f"{where}.spec.tolerations", pod.get("tolerations") or [])
    return problems


def kubernetes_refusals(child: Mapping[str, Any]) -> list[str]:
    """Why the API server would refuse `child`, one line per reason; empty when it would not."""
    kind = str(child.get("kind"))
    metadata = child.get("metadata") or {}
    name = str(metadata.get("name", ""))
    where = f"{kind} {name}"
    problems = []
    name_ok = is_dns_label(name) if kind in DNS_LABEL_NAMED_KINDS else is_dns_subdomain(name)
    if not name_ok:
        problems.append(f"{where}: the name is not a valid {kind} name")
    problems += _metadata_problems(f"{where} metadata", metadata)
    spec = child.get("spec") or {}
    template = spec.get("template")
    if isinstance(template, Mapping):
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        problems += _pod_problems(f"{where} template", template, selector)
    return problems
