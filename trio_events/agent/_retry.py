"""Small pure parts of the publishers' retry policy: backoff delays and outcome classification.

Ray's HTTP publisher retries every failure, forever by default, so a sink that answers 400 to a
batch receives the same batch again and again (ray#56911). Here each outcome is classified once:

==========================================================  ==========
what happened                                               outcome
==========================================================  ==========
status < 400 (what Ray's ``raise_for_status`` accepts)      SUCCESS
408, 429, and 5xx except 501                                RETRYABLE
any other status >= 400 (400, 401, 403, 404, 413, 501...)   PERMANENT
timeouts, connection errors, resets, protocol errors        RETRYABLE
an invalid TLS certificate                                  RETRYABLE
too many redirects, an unsupported URL scheme, a request
h11 refuses to send                                         PERMANENT
==========================================================  ==========

An invalid TLS certificate is a configuration problem, but it is classified as retryable on
purpose: dropping events because a certificate was rotated (or a CA bundle not yet updated) is
worse than holding them until an operator fixes it. The publisher logs every such retry at ERROR
with the verification message, and ``give_up_after`` bounds the wait for those who prefer.

``Retry-After`` (delay-seconds or an HTTP-date) is parsed for every response; the publisher
honours it when it is longer than its own backoff.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import re
import ssl
from typing import TYPE_CHECKING, Final

import httpx

from trio_events.agent._sink import Outcome, PublishOutcome

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "backoff_delays",
    "classify",
    "classify_status",
    "http_date_timestamp",
    "outcome_of_exception",
    "outcome_of_response",
    "parse_retry_after",
]

# Ray caps the exponent so the float never overflows however long a sink stays down.
_MAX_EXPONENT: Final = 30
_DELAY_SECONDS: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def backoff_delays(
    initial: float = 0.01,
    maximum: float = 5.0,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Delays before the 1st, 2nd, ... retry: Ray's ``RayEventPublisher`` formula, endless.

    Retry ``n`` (from 1) waits ``min(maximum, initial * 2**min(n, 30))`` scaled by a uniform
    factor in ``[1 - jitter, 1 + jitter]`` and clamped at 0. With Ray's defaults that is 0.02,
    0.04, 0.08, ... 2.56, then 5.0 s forever (each +-10 %).
    """
    for name, value in (("initial", initial), ("maximum", maximum), ("jitter", jitter)):
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"Backoff {name} must be a number >= 0, got {value!r}.")
    rng = rng if rng is not None else random.Random()
    attempt = 0
    while True:
        attempt += 1
        delay = min(maximum, initial * 2 ** min(attempt, _MAX_EXPONENT))
        if jitter:
            delay = rng.uniform(delay * (1 - jitter), delay * (1 + jitter))
        yield max(0.0, delay)


def classify_status(status: int) -> Outcome:
    """The outcome of an HTTP response with this status code (see the module's table)."""
    if status < 400:
        return Outcome.SUCCESS
    if status in (408, 429) or (500 <= status <= 599 and status != 501):
        return Outcome.RETRYABLE
    return Outcome.PERMANENT


def _exception_reason(exc: BaseException) -> tuple[Outcome, str]:
    """Outcome and a short reason (a metric label and log word) for a failed request."""
    if isinstance(exc, httpx.TimeoutException):
        return Outcome.RETRYABLE, "timeout"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return Outcome.PERMANENT, "unsupported_protocol"
    if isinstance(exc, httpx.LocalProtocolError):
        # h11 refused to send our own request (say, an illegal header value): no retry helps.
        return Outcome.PERMANENT, "local_protocol_error"
    if isinstance(exc, httpx.TransportError | OSError):
        cause = _ssl_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return Outcome.RETRYABLE, "tls_certificate"
        if cause is not None:
            return Outcome.RETRYABLE, "tls_error"
        if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
            return Outcome.RETRYABLE, "connect_error"
        if isinstance(exc, httpx.RemoteProtocolError):
            return Outcome.RETRYABLE, "remote_protocol_error"
        if isinstance(exc, httpx.ProxyError):
            return Outcome.RETRYABLE, "proxy_error"
        return Outcome.RETRYABLE, "network_error"
    if isinstance(exc, httpx.TooManyRedirects):
        return Outcome.PERMANENT, "too_many_redirects"
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return classify_status(status), f"http_{status}"
    if isinstance(exc, httpx.HTTPError):  # DecodingError, InvalidURL, StreamError...
        return Outcome.PERMANENT, type(exc).__name__.lower()
    raise TypeError(
        f"classify() takes an httpx.Response, an httpx.HTTPError or an OSError, not "
        f"{type(exc).__name__}; other exceptions are bugs and must propagate."
    )


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error somewhere in the cause chain (httpx wraps it two or three levels deep)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def classify(outcome: httpx.Response | BaseException) -> Outcome:
    """Classify a response or the exception a request raised (see the module's table).

    Raises TypeError for an exception that is neither an ``httpx.HTTPError`` nor an OSError.
    """
    if isinstance(outcome, httpx.Response):
        return classify_status(outcome.status_code)
    return _exception_reason(outcome)[0]


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` value, or None if absent or invalid.

    ``value`` is delay-seconds (``"120"``; fractions are tolerated) or an HTTP-date, which is
    taken relative to ``now`` (seconds since the epoch). A date in the past means 0.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    when = http_date_timestamp(text)
    return None if when is None else max(0.0, when - now)


def http_date_timestamp(text: str) -> float | None:
    """Seconds since the epoch of an HTTP-date (RFC 9110 5.6.7), or None if it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # a "-0000" zone parses as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def outcome_of_response(
    status: int, *, retry_after: str | None = None, body: bytes = b"", now: float = 0.0
) -> PublishOutcome:
    """The outcome of a response with ``status``, its ``Retry-After`` header and body start."""
    return PublishOutcome(
        classify_status(status),
        f"http_{status}",
        status=status,
        retry_after=parse_retry_after(retry_after, now),
        detail=body.decode("utf-8", errors="replace"),
    )


def outcome_of_exception(exc: BaseException) -> PublishOutcome:
    """The outcome of a request that raised ``exc`` (an ``httpx.HTTPError`` or OSError)."""
    outcome, reason = _exception_reason(exc)
    status = exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None
    cause = _ssl_cause(exc)
    # httpx's own messages are often empty (ConnectError('')); the ssl error says what failed.
    message = str(cause) if cause is not None else (str(exc) or type(exc).__name__)
    return PublishOutcome(outcome, reason, status=status, detail=message)
