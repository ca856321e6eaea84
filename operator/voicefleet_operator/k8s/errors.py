"""API failures, classified by what the caller should do about them."""

from __future__ import annotations

from typing import Any

INVALID_STATUSES = frozenset({400, 422})
"""The request itself is wrong: retrying it unchanged can never succeed."""


class ApiError(Exception):
    """A request the API server refused, or that never reached it (status 0)."""

    def __init__(self, status: int, reason: str, message: str, *, method: str, path: str) -> None:
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.method = method
        self.path = path

    @property
    def invalid(self) -> bool:
        return self.status in INVALID_STATUSES

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """A server-side apply that would change another manager's field, or a stale write."""
        return self.status == 409


def from_status_body(status: int, body: Any, *, method: str, path: str) -> ApiError:
    """Build the error from a metav1.Status body (or whatever the server sent instead)."""
    reason = "Unknown"
    message = ""
    if isinstance(body, dict):
        reason = str(body.get("reason") or reason)
        message = str(body.get("message") or "")
    return ApiError(status, reason, message, method=method, path=path)


def retry_delay(attempt: int, *, backoff: float, backoff_max: float) -> float:
    """Exponential backoff: `backoff`, 2x, 4x, ... capped at `backoff_max`."""
    return float(min(backoff_max, backoff * (2 ** max(0, min(attempt, 20)))))
