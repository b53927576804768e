"""``trio-events query``: ask questions of a store written by ``collect`` or ``agent``.

``query [--db PATH] [--json] [counts | timeline KIND ID [--attempt N] | failed | recent]``;
``--db`` and ``--json`` may also follow the question. Errors (no store, a bad kind or ID) raise
ValueError, which the command line says in one sentence.
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
import sys
from typing import TYPE_CHECKING, Final

from trio_events.store._backend import StoreUnavailableError
from trio_events.store._query import (
    counts,
    failed_tasks,
    format_counts,
    format_entities,
    format_failed_tasks,
    format_timeline,
    normalize_kind,
    recent_entities,
    timeline,
    to_json,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

#: Bytes in each kind of Ray ID (ray-reference.md); submission IDs are text.
ID_BYTES: Final = {
    "task": 24,
    "actor": 16,
    "job": 4,
    "node": 28,
    "worker": 28,
    "placement_group": 18,
}
_HEX: Final = re.compile(r"^[0-9a-fA-F]+$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The positional arguments of ``query timeline`` (flags come from the settings table)."""
    if parser.prog.endswith(" timeline"):
        parser.add_argument("kind", metavar="KIND", help="the kind of entity")
        parser.add_argument("entity_id", metavar="ID", help="the ID, in hex or base64")


def check_id(kind: str, entity_id: str) -> str:
    """``entity_id`` if it reads as an ID of ``kind`` (hex or base64 of the right length)."""
    size = ID_BYTES.get(kind)
    if size is None:
        return entity_id
    if _HEX.match(entity_id) and len(entity_id) == 2 * size:
        return entity_id
    try:
        raw = base64.b64decode(entity_id, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == size:
        return entity_id
    raise ValueError(
        f"{entity_id!r} is not a {kind} ID: give {2 * size} hex digits or the base64 of "
        f"{size} bytes, as the JSON shows it"
    )


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    return run_query(args)


def run_query(args: argparse.Namespace) -> int:
    """Answer the question in ``args``; print the answer and return 0 (1: nothing found)."""
    db = args.db
    question = args.question or "counts"
    result: object
    try:
        if question == "timeline":
            kind = normalize_kind(args.kind)
            result = found = timeline(db, kind, check_id(kind, args.entity_id), args.attempt)
            if not found.event_count:
                print(format_timeline(found), file=sys.stderr)
                return 1
            text = format_timeline(found)
        elif question == "failed":
            result = failures = failed_tasks(db, args.limit)
            text = format_failed_tasks(failures)
        elif question == "recent":
            only = None if args.kind is None else normalize_kind(args.kind)
            result = entities = recent_entities(db, only, args.limit)
            text = format_entities(entities)
        else:
            result = totals = counts(db)
            text = format_counts(totals)
    except FileNotFoundError:
        raise ValueError(
            f"there is no event store at {db}; run `trio-events collect --db {db}` first or "
            "pass --db PATH"
        ) from None
    except StoreUnavailableError as exc:
        raise ValueError(str(exc).rstrip(".")) from None
    except sqlite3.Error as exc:
        raise ValueError(f"the event store {db} cannot be read ({exc})") from None
    print(to_json(result) if args.json else text, flush=True)
    return 0
