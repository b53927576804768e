"""No secret in any log line at any level: hpack's DEBUG headers, URLs, tracebacks."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from tests.test_agent import event, grpclib_add_events, request, running_agent
from trio_events._logging import RedactingFilter, install_redaction, redact, redact_url
from trio_events.agent._ingest import AgentConfig

TOKEN = "tok-9f8e7d6c5b4a"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://sink:8084/v1/events", "http://sink:8084/v1/events"),
        (f"https://sink/v1?token={TOKEN}&a=1", "https://sink/v1?token=REDACTED&a=REDACTED"),
        (f"https://user:{TOKEN}@sink/v1", "https://user:REDACTED@sink/v1"),
        ("http://[::1]:80/x?k=v", "http://[::1]:80/x?k=REDACTED"),
        ("http://[bad/", "http://[bad/"),  # does not parse: shown as it is
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "text",
    [
        f"authorization: Bearer {TOKEN}",
        f"Decoded (b'authorization', b'Bearer {TOKEN}'), consumed 12",
        f'{{"authorization": "{TOKEN}"}}',
        f"POST https://h/x?sig={TOKEN} failed",
        f"bearer%20{TOKEN}",
    ],
)
def test_redact_text(text: str) -> None:
    cleaned = redact(text)
    assert TOKEN not in cleaned
    assert "REDACTED" in cleaned


@contextmanager
def debug_log(*, hpack_level: int | None = None) -> Iterator[io.StringIO]:
    """Everything logged at DEBUG, through a handler set up as the CLI sets up its own."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    saved = root.level, {n: logging.getLogger(n).level for n in ("hpack", "h2")}
    install_redaction(handler)
    if hpack_level is not None:
        for name in ("hpack", "h2"):
            logging.getLogger(name).setLevel(hpack_level)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


async def authenticated_calls() -> None:
    config = AgentConfig(auth_token=TOKEN)
    with trio.fail_after(10):
        async with running_agent(config) as running:
            metadata = {"authorization": f"Bearer {TOKEN}"}
            await grpclib_add_events(running.port, request(event(1)), metadata)


async def test_hpack_debug_lines_never_show_the_token() -> None:
    """Even with hpack's own logger forced to DEBUG, its header lines are redacted."""
    with debug_log(hpack_level=logging.DEBUG) as out:
        await authenticated_calls()
    text = out.getvalue()
    assert "authorization" in text  # hpack did log the header...
    assert TOKEN not in text  # ...without its value


async def test_the_http2_stack_is_kept_at_warning() -> None:
    with debug_log() as out:
        await authenticated_calls()
    text = out.getvalue()
    assert TOKEN not in text
    assert " hpack" not in text
    assert "DEBUG" in text  # our own DEBUG lines still pass


def test_tracebacks_are_redacted() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise RuntimeError(f"could not POST to https://u:{TOKEN}@h/")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert record.exc_text is not None
    assert "https://u:REDACTED@h/" in record.exc_text
    assert TOKEN not in logging.Formatter().format(record)
