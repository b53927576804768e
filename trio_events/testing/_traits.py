"""What in a JSON body receivers often trip over, to name the class of a failing input."""

from __future__ import annotations

import re
from typing import Any, Final

_RFC3339: Final = re.compile(r"^(\d{4})-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(\d+))?Z$")
_LARGE_MAP: Final = 100


def body_traits(value: Any) -> list[str]:
    """Traits of a JSON value that receivers often mishandle, in a fixed order: timestamps with
    no or 9 fractional digits, or in years (before 1970, after 2262: beyond int64 nanoseconds), enum
    values and event types printed as numbers (newer than 2.60), control or astral characters,
    large maps, 64-bit integers (JSON strings)."""
    found: set[str] = set()

    def visit(item: Any, key: str) -> None:
        if isinstance(item, dict):
            if len(item) >= _LARGE_MAP:
                found.add("a map of 100+ entries")
            for k, v in item.items():
                visit(v, k)
        elif isinstance(item, list):
            for v in item:
                visit(v, key)
        elif isinstance(item, str):
            stamp = _RFC3339.match(item)
            if stamp is not None:
                digits = len(stamp.group(2) or "")
                if digits in (0, 9):
                    found.add("whole-second timestamps" if not digits else "nanosecond timestamps")
                year = int(stamp.group(1))
                if year < 1970 or year > 2262:
                    found.add("timestamps before 1970 or after 2262")
            if any(c < " " or c == "\x7f" for c in item):
                found.add("control characters in strings")
            if any(c > "\uffff" for c in item):
                found.add("characters beyond the BMP")
        elif isinstance(item, int) and not isinstance(item, bool) and key in _ENUM_KEYS:
            found.add("an event type newer than 2.60" if key in _TYPE_KEYS else "enum numbers")

    visit(value, "")
    return [trait for trait in _TRAIT_ORDER if trait in found]


_TYPE_KEYS: Final = frozenset({"eventType", "event_type"})
_ENUM_KEYS: Final = _TYPE_KEYS | {
    "severity", "sourceType", "source_type", "state", "taskType", "task_type", "language",
    "reason", "restartReason", "restart_reason", "aliveSubState", "alive_sub_state",
    "workerType", "worker_type", "exitType", "exit_type", "errorType", "error_type",
}  # fmt: skip
_TRAIT_ORDER: Final = (
    "whole-second timestamps",
    "nanosecond timestamps",
    "timestamps before 1970 or after 2262",
    "an event type newer than 2.60",
    "enum numbers",
    "control characters in strings",
    "characters beyond the BMP",
    "a map of 100+ entries",
)
