"""Value conversions that the generated converters call (see ``_convert.py`` for the design).

Each turns one protobuf field value into what protobuf's ``json_format`` prints for it:
``Timestamp`` as RFC 3339 with 0, 3, 6 or 9 fractional digits, bytes as padded base64,
non-finite doubles as protobuf's strings, enum numbers as names (unknown ones stay numbers).
"""

from __future__ import annotations

import binascii
import datetime
from typing import TYPE_CHECKING, Any, Final

from google.protobuf.internal import type_checkers

if TYPE_CHECKING:
    from collections.abc import Mapping

# -- value conversions used by the generated code ---------------------------------------------

# protobuf refuses to print timestamps outside years 1..9999 (internal/well_known_types.py).
_TIMESTAMP_SECONDS_MIN: Final = -62135596800
_TIMESTAMP_SECONDS_MAX: Final = 253402300799
_EPOCH: Final = datetime.datetime(1970, 1, 1)
# Events arrive in bursts within the same second, so the calendar part is cached per second.
# The bound only keeps a stream of scattered timestamps from growing the cache forever.
_SECOND_CACHE_LIMIT: Final = 8192
_second_cache: dict[int, str] = {}


def _format_seconds(seconds: int) -> str:
    if not _TIMESTAMP_SECONDS_MIN <= seconds <= _TIMESTAMP_SECONDS_MAX:
        # Caught by JsonConverter, which then lets protobuf raise its own error.
        raise ValueError(f"Timestamp seconds {seconds} out of range")
    if len(_second_cache) >= _SECOND_CACHE_LIMIT:
        _second_cache.clear()
    text = _second_cache[seconds] = (_EPOCH + datetime.timedelta(seconds=seconds)).isoformat()
    return text


def _timestamp(ts: Any) -> str:
    """``Timestamp.ToJsonString()``: RFC 3339 UTC with the fewest of 0/3/6/9 exact digits."""
    seconds: int = ts.seconds
    nanos: int = ts.nanos
    text = _second_cache.get(seconds) or _format_seconds(seconds)
    if nanos == 0:
        return f"{text}Z"
    if not 0 < nanos < 1_000_000_000:
        raise ValueError(f"Timestamp nanos {nanos} out of range")
    # str(n + 10**k)[1:] is n zero-padded to k digits, measurably cheaper than a format spec.
    if nanos % 1_000:
        return f"{text}.{str(nanos + 1_000_000_000)[1:]}Z"
    if nanos % 1_000_000:
        return f"{text}.{str(nanos // 1_000 + 1_000_000)[1:]}Z"
    return f"{text}.{str(nanos // 1_000_000 + 1_000)[1:]}Z"


_b2a: Final = binascii.b2a_base64


def _b64(value: bytes) -> str:
    return _b2a(value, newline=False).decode()


def _non_finite(value: float) -> str:
    if value != value:  # only NaN is unequal to itself
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _double(value: float) -> float | str:
    # x - x is 0.0 for every finite x and NaN for NaN and both infinities.
    return value if value - value == 0.0 else _non_finite(value)


def _float(value: float) -> float | str:
    # A 32-bit float arrives widened to a double; protobuf prints the shortest decimal that
    # reads back as the same 32-bit value.
    if value - value == 0.0:
        return float(type_checkers.ToShortestFloat(value))
    return _non_finite(value)


def _string_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    # Iterating keys and indexing is several times faster than items() or dict() on upb maps.
    return {key: mapping[key] for key in mapping}


def _double_map(mapping: Mapping[str, float]) -> dict[str, float | str]:
    result: dict[str, float | str] = {key: mapping[key] for key in mapping}
    for key, value in result.items():
        if isinstance(value, float) and value - value != 0.0:
            result[key] = _non_finite(value)
    return result


def _bool_key(key: bool) -> str:
    return "true" if key else "false"


class _OpenEnumNames(dict[int, Any]):
    """Enum number to JSON name; numbers this schema does not know print as the integer."""

    def __missing__(self, number: int) -> int:
        return number


class _ClosedEnumNames(dict[int, Any]):
    """For closed (proto2) enums protobuf refuses unknown numbers; we fall back and let it."""

    def __missing__(self, number: int) -> int:
        raise ValueError(f"unknown number {number} of a closed enum")
