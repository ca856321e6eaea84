"""The cron form the builtin autoscaler's schedule windows take: `M H * * DOW`.

Defined once: the schema's pattern, the models' checks and the autoscaler's timer all read
expressions through this module, so a window the API accepts is one the timer can apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAILY_CRON_PATTERN = (
    r"^([0-5]?[0-9]) ([01]?[0-9]|2[0-3]) \* \* (\*|[0-7](-[0-7])?(,[0-7](-[0-7])?)*)$"
)
"""Minute, hour, then `* *` (no day of month, no month), then `*` or days of the week."""

_DAILY_CRON_RE = re.compile(DAILY_CRON_PATTERN)


@dataclass(frozen=True)
class DailyTime:
    second_of_day: int
    weekdays: frozenset[int]
    """`datetime.weekday()` numbers: 0 is Monday."""


def parse_daily_cron(expression: str) -> DailyTime:
    """The time of day and weekdays of `M H * * DOW`; ValueError for any other form."""
    match = _DAILY_CRON_RE.fullmatch(expression)
    if match is None:
        raise ValueError(
            f"{expression!r} is not of the form 'M H * * DOW' (minute, hour, any day of the "
            "month, any month, days of the week such as 1-5): the autoscaler applies only "
            "daily windows"
        )
    minute, hour, _, _, days_field = expression.split()
    return DailyTime(int(hour) * 3600 + int(minute) * 60, _weekdays(days_field))


def _weekdays(field: str) -> frozenset[int]:
    """Cron day-of-week (0 or 7 is Sunday) as `datetime.weekday()` numbers (0 is Monday)."""
    if field == "*":
        return frozenset(range(7))
    days: set[int] = set()
    for part in field.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if first > last:
            raise ValueError(
                f"day-of-week range {part} runs backwards: write it as {last}-{first} or as a "
                "list such as 5,6,0"
            )
        days.update((cron_day - 1) % 7 for cron_day in range(first, last + 1))
    return frozenset(days)
