"""The syntax of names, labels and paths: what Kubernetes and the Hugging Face hub accept.

The models use these patterns for the CRD schema (so the API server refuses bad input at
admission) and the predicates where CEL cannot afford a regex; the builders check the children
with the same predicates before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
_NAME_SEGMENT = r"[A-Za-z0-9_]+([-.][A-Za-z0-9_]+)*"
"""Letters, digits and _, with single - or . between them: no `..`, no leading dot or dash."""
MODEL_NAME_PATTERN = rf"^({_NAME_SEGMENT}|(/[A-Za-z0-9_][-A-Za-z0-9_.]*)+)$"
"""A model name (tiny.en, large-v3) or an absolute path inside the image without `.`/`..`."""
HF_REPOSITORY_PATTERN = rf"^{_NAME_SEGMENT}/{_NAME_SEGMENT}$"
"""A Hugging Face repository id, owner/name (no `--` or `..`: the hub refuses them too)."""
_REF_SEGMENT = r"[A-Za-z0-9_][-A-Za-z0-9_]*(\.[-A-Za-z0-9_]+)*"
REVISION_PATTERN = rf"^{_REF_SEGMENT}(/{_REF_SEGMENT})*$"
"""A git revision the hub serves: a branch, tag, commit or ref such as refs/pr/3."""
_PATH_SEGMENT = r"\.?[-A-Za-z0-9_][-A-Za-z0-9_.]*"
RELATIVE_PATH_PATTERN = rf"^{_PATH_SEGMENT}(/{_PATH_SEGMENT})*$"
"""A relative path whose segments are never `.` or `..` (a volume subPath)."""
PROMQL_PATTERN = r"^\s*[^\s\x00-\x1f\x7f][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
"""Some non-blank text without control characters (line breaks and tabs are fine)."""
PROMETHEUS_URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
"""A base URL: no credentials (use a proxy or a NetworkPolicy), no query, no fragment."""
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

ANNOTATIONS_MAX_BYTES = 256 * 1024
"""The API server's limit on all annotations of one object, keys and values together."""
LABEL_VALUE_MAX = 63
LABEL_KEY_PREFIX_MAX = 253
DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253


def is_label_key(key: str) -> bool:
    """A qualified name: [dns-subdomain/]name, name at most 63 characters."""
    prefix, _, _ = key.rpartition("/")
    return len(prefix) <= LABEL_KEY_PREFIX_MAX and re.fullmatch(LABEL_KEY_PATTERN, key) is not None


def is_label_value(value: str) -> bool:
    return len(value) <= LABEL_VALUE_MAX and re.fullmatch(LABEL_VALUE_PATTERN, value) is not None


def is_dns_label(name: str) -> bool:
    """An RFC 1035 label (what a Service name must be): a letter first, at most 63."""
    return len(name) <= DNS_LABEL_MAX and re.fullmatch(DNS_LABEL_PATTERN, name) is not None


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= DNS_SUBDOMAIN_MAX and re.fullmatch(DNS_SUBDOMAIN_PATTERN, name) is not None


def is_env_name(name: str) -> bool:
    return re.fullmatch(ENV_NAME_PATTERN, name) is not None


def is_relative_path(path: str) -> bool:
    return re.fullmatch(RELATIVE_PATH_PATTERN, path) is not None


def annotations_size(annotations: Mapping[str, str]) -> int:
    """Bytes the API server counts against ANNOTATIONS_MAX_BYTES."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
