"""Kubernetes resource quantities as exact numbers, to compare requests with limits."""

from __future__ import annotations

import re
from decimal import Decimal

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_NUMBER = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")
_DECIMAL_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_BINARY_SUFFIXES = "KMGTPE"
"""Ki, Mi, ...: powers of 1024."""


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity such as 500m, 2, 16Gi or 1e3; ValueError for anything else."""
    if re.fullmatch(QUANTITY_PATTERN, text) is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (such as 500m, 2, 16Gi)")
    match = _NUMBER.match(text)
    assert match is not None  # the pattern above guarantees a leading number
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix.endswith("i"):
        return number * Decimal(1024) ** (_BINARY_SUFFIXES.index(suffix[0]) + 1)
    if len(suffix) > 1:  # an exponent: 1e3, 5E-2 (a lone E is exa)
        return number * Decimal(10) ** Decimal(suffix[1:])
    return number * _DECIMAL_SUFFIXES[suffix]
