"""The pure retry parts: Ray's backoff formula with jitter, outcome classification, Retry-After."""

from __future__ import annotations

import itertools
import random
import ssl

import httpx
import pytest

from trio_events.agent._retry import (
    backoff_delays,
    classify,
    classify_status,
    http_date_timestamp,
    outcome_of_exception,
    outcome_of_response,
    parse_retry_after,
)
from trio_events.agent._sink import DETAIL_LIMIT, Outcome, PublishOutcome

# --- backoff ------------------------------------------------------------------------------------

RAY_SEQUENCE = [0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.0, 5.0, 5.0]


def test_backoff_without_jitter_is_rays_sequence() -> None:
    delays = list(itertools.islice(backoff_delays(jitter=0.0), len(RAY_SEQUENCE)))
    assert delays == pytest.approx(RAY_SEQUENCE)


def test_backoff_exponent_is_capped_so_it_never_overflows() -> None:
    delays = backoff_delays(initial=1.0, maximum=float("inf"), jitter=0.0)
    values = list(itertools.islice(delays, 40))
    assert values[29] == 2.0**30
    assert values[30:] == [2.0**30] * 10


def test_backoff_jitter_stays_within_bounds_and_varies() -> None:
    rng = random.Random(1234)
    delays = list(itertools.islice(backoff_delays(jitter=0.1, rng=rng), 2000))
    nominal = RAY_SEQUENCE + [5.0] * (len(delays) - len(RAY_SEQUENCE))
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected * 0.9 <= delay <= expected * 1.1
    capped = delays[20:]
    assert min(capped) < 4.6
    assert max(capped) > 5.4
    assert len(set(capped)) > 1900


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = list(itertools.islice(backoff_delays(rng=random.Random(7)), 20))
    second = list(itertools.islice(backoff_delays(rng=random.Random(7)), 20))
    assert first == second


def test_backoff_with_full_jitter_never_goes_negative() -> None:
    delays = itertools.islice(backoff_delays(jitter=1.0, rng=random.Random(0)), 500)
    assert all(d >= 0 for d in delays)


def test_backoff_zero_initial_means_immediate_retries() -> None:
    assert list(itertools.islice(backoff_delays(initial=0.0), 5)) == [0.0] * 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial": -1.0}, r"^Backoff initial must be a number >= 0, got -1\.0\.$"),
        ({"maximum": float("nan")}, r"^Backoff maximum must be a number >= 0, got nan\.$"),
        ({"jitter": -0.1}, r"^Backoff jitter must be a number >= 0, got -0\.1\.$"),
    ],
)
def test_backoff_rejects_bad_settings(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        next(backoff_delays(**kwargs))


# --- classification ----------------------------------------------------------------------------

STATUS_TABLE = [
    (100, Outcome.SUCCESS),
    (200, Outcome.SUCCESS),
    (201, Outcome.SUCCESS),
    (202, Outcome.SUCCESS),
    (204, Outcome.SUCCESS),
    (301, Outcome.SUCCESS),
    (304, Outcome.SUCCESS),
    (399, Outcome.SUCCESS),
    (400, Outcome.PERMANENT),
    (401, Outcome.PERMANENT),
    (403, Outcome.PERMANENT),
    (404, Outcome.PERMANENT),
    (405, Outcome.PERMANENT),
    (408, Outcome.RETRYABLE),
    (409, Outcome.PERMANENT),
    (413, Outcome.PERMANENT),
    (415, Outcome.PERMANENT),
    (422, Outcome.PERMANENT),
    (429, Outcome.RETRYABLE),
    (499, Outcome.PERMANENT),
    (500, Outcome.RETRYABLE),
    (501, Outcome.PERMANENT),
    (502, Outcome.RETRYABLE),
    (503, Outcome.RETRYABLE),
    (504, Outcome.RETRYABLE),
    (507, Outcome.RETRYABLE),
    (599, Outcome.RETRYABLE),
    (600, Outcome.PERMANENT),
]


@pytest.mark.parametrize(("status", "expected"), STATUS_TABLE)
def test_classify_status(status, expected) -> None:
    assert classify_status(status) is expected
    assert classify(httpx.Response(status)) is expected
    outcome = outcome_of_response(status)
    assert outcome.outcome is expected
    assert outcome.reason == f"http_{status}"
    assert outcome.status == status


_REQUEST = httpx.Request("POST", "http://sink.invalid/")


def _cert_error() -> httpx.ConnectError:
    """An invalid certificate as httpx on trio reports it: the ssl error three causes deep."""
    verify = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] unable to get issuer"
    )
    try:
        try:
            try:
                raise verify
            except ssl.SSLError as exc:
                raise OSError("broken resource") from exc
        except OSError as exc:
            raise httpx.ConnectError("") from exc
    except httpx.ConnectError as exc:
        return exc


def _tls_error() -> httpx.ConnectError:
    err = httpx.ConnectError("")
    err.__cause__ = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    return err


EXCEPTION_TABLE = [
    (httpx.ConnectTimeout("connect"), Outcome.RETRYABLE, "timeout"),
    (httpx.ReadTimeout("read"), Outcome.RETRYABLE, "timeout"),
    (httpx.WriteTimeout("write"), Outcome.RETRYABLE, "timeout"),
    (httpx.PoolTimeout("pool"), Outcome.RETRYABLE, "timeout"),
    (httpx.ConnectError("[Errno 111] Connection refused"), Outcome.RETRYABLE, "connect_error"),
    (httpx.ReadError("Connection reset by peer"), Outcome.RETRYABLE, "network_error"),
    (httpx.WriteError("Broken pipe"), Outcome.RETRYABLE, "network_error"),
    (httpx.CloseError("close"), Outcome.RETRYABLE, "network_error"),
    (
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        Outcome.RETRYABLE,
        "remote_protocol_error",
    ),
    (httpx.ProxyError("proxy"), Outcome.RETRYABLE, "proxy_error"),
    (httpx.LocalProtocolError("Illegal header value"), Outcome.PERMANENT, "local_protocol_error"),
    (httpx.UnsupportedProtocol("ftp"), Outcome.PERMANENT, "unsupported_protocol"),
    (httpx.TooManyRedirects("loop", request=_REQUEST), Outcome.PERMANENT, "too_many_redirects"),
    (httpx.DecodingError("bad gzip"), Outcome.PERMANENT, "decodingerror"),
    (
        httpx.HTTPStatusError("503", request=_REQUEST, response=httpx.Response(503)),
        Outcome.RETRYABLE,
        "http_503",
    ),
    (
        httpx.HTTPStatusError("404", request=_REQUEST, response=httpx.Response(404)),
        Outcome.PERMANENT,
        "http_404",
    ),
    (ConnectionRefusedError(111, "Connection refused"), Outcome.RETRYABLE, "connect_error"),
    (ConnectionResetError(104, "Connection reset by peer"), Outcome.RETRYABLE, "network_error"),
    (_cert_error(), Outcome.RETRYABLE, "tls_certificate"),
    (_tls_error(), Outcome.RETRYABLE, "tls_error"),
]


@pytest.mark.parametrize(
    ("exc", "expected", "reason"), EXCEPTION_TABLE, ids=[repr(e[0]) for e in EXCEPTION_TABLE]
)
def test_classify_exception(exc, expected, reason) -> None:
    assert classify(exc) is expected
    outcome = outcome_of_exception(exc)
    assert outcome.outcome is expected
    assert outcome.reason == reason
    assert outcome.retry_after is None
    assert outcome.detail  # never empty, even for httpx's ConnectError('')


def test_a_certificate_error_reports_the_verification_message() -> None:
    outcome = outcome_of_exception(_cert_error())
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.detail
    assert outcome.status is None


def test_classify_refuses_exceptions_that_are_bugs() -> None:
    with pytest.raises(
        TypeError,
        match=r"^classify\(\) takes an httpx\.Response, an httpx\.HTTPError or an OSError, not "
        r"KeyError; other exceptions are bugs and must propagate\.$",
    ):
        classify(KeyError("x"))


def test_outcome_detail_is_one_bounded_line() -> None:
    body = b"<html>\n  <body>" + b"x" * 5000 + b"</body>\n</html>"
    outcome = outcome_of_response(500, body=body)
    assert "\n" not in outcome.detail
    assert len(outcome.detail) == DETAIL_LIMIT
    assert outcome.detail.startswith("<html> <body>xxx")
    assert outcome.detail.endswith("...")


def test_outcome_detail_survives_undecodable_bytes() -> None:
    assert outcome_of_response(400, body=b"\xff\xfe bad").detail == "\ufffd\ufffd bad"


def test_publish_outcome_flags() -> None:
    assert PublishOutcome(Outcome.SUCCESS, "http_200").ok
    assert PublishOutcome(Outcome.RETRYABLE, "timeout").retryable
    permanent = PublishOutcome(Outcome.PERMANENT, "http_400")
    assert not permanent.ok
    assert not permanent.retryable


# --- Retry-After --------------------------------------------------------------------------------

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        (None, None),
        ("", None),
        ("-5", None),
        ("soon", None),
        ("3 s", None),
        ("\u00b2", None),  # a superscript two is a digit to str.isdigit, not to HTTP
    ],
)
def test_retry_after_delay_seconds(value, expected) -> None:
    assert parse_retry_after(value, NOW) == expected


@pytest.mark.parametrize(
    "date",
    [
        "Sun, 15 Jun 2025 15:07:10 GMT",  # IMF-fixdate, the form senders must use
        "Sunday, 15-Jun-25 15:07:10 GMT",  # obsolete RFC 850
        "Sun Jun 15 15:07:10 2025",  # obsolete asctime (no zone: GMT)
        "Sun, 15 Jun 2025 15:07:10 -0000",
        "Sun, 15 Jun 2025 17:07:10 +0200",
    ],
)
def test_retry_after_http_date_is_relative_to_now(date) -> None:
    assert parse_retry_after(date, NOW) == pytest.approx(30.0)


def test_retry_after_date_in_the_past_means_now() -> None:
    assert parse_retry_after("Sun, 15 Jun 2025 15:00:00 GMT", NOW) == 0.0


def test_http_date_timestamp() -> None:
    assert http_date_timestamp("Thu, 01 Jan 1970 00:00:10 GMT") == 10.0
    assert http_date_timestamp("not a date") is None


def test_outcome_of_response_parses_retry_after() -> None:
    outcome = outcome_of_response(429, retry_after="Sun, 15 Jun 2025 15:06:50 GMT", now=NOW)
    assert outcome.retry_after == pytest.approx(10.0)
    assert outcome.retryable
