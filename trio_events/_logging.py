"""No secret in any log line, at any level: bearer tokens, authorization headers, URL credentials.

Secrets reach logs in ways the code that logs cannot see: hpack (under grpclib's h2) writes
every decoded header at DEBUG, ``authorization: Bearer <token>`` included; an exception's text
or a traceback may quote a URL with ``user:password@`` or a token in its query string.
:class:`RedactingFilter`, attached to the process's log handler, rewrites every record's
message and traceback before any formatter sees it; :func:`redact_url` is for the URLs a
command prints itself. The h2 and hpack loggers are also held at WARNING: at DEBUG they log
every frame and header, which is noise as well as a leak.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Final, final

REDACTED: Final = "REDACTED"
#: Loggers of the HTTP/2 stack under grpclib; only their warnings and errors are kept.
NOISY_LOGGERS: Final = ("hpack", "h2")

_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_BEARER: Final = re.compile(r"(?i)\b(bearer|basic)(\s+|%20)[^\s'\",;)]+")
# An authorization or cookie header as text ("authorization: x"), a Python tuple repr
# ("(b'authorization', b'x')") or JSON ('"authorization": "x"').
_HEADER: Final = re.compile(
    r"(?i)((?:proxy-)?authorization|x-api-key|cookie|set-cookie)"
    r"(\s*:\s*|['\"],\s*b?['\"]|['\"]\s*:\s*['\"])([^'\"\r\n]*)"
)


def redact_url(url: str) -> str:
    """``url`` with its password and every query value replaced by ``REDACTED``.

    Query values are all redacted, not only those with telling names: a signed URL's signature
    or an API key can be called anything. A string that does not parse is returned as it is.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{REDACTED}@{hostport}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{name}={REDACTED}" for name, _ in pairs) or REDACTED
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str) -> str:
    """``text`` with bearer tokens, authorization headers and URL credentials redacted."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


@final
class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record's message and traceback (see the module)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_redaction(handler: logging.Handler) -> None:
    """Redact everything ``handler`` writes, and keep the HTTP/2 stack's DEBUG logs out."""
    handler.addFilter(RedactingFilter())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
