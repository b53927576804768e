"""Questions people ask of an event store, as plain functions returning data, plus formatters.

Each query opens the store read-only, answers, and closes it, so it can run while a collector is
writing (WAL lets readers and the writer proceed together). The store is an SQLite path or a
``postgresql://`` URL; the SQL is written once for both (see ``_backend.py``). IDs come back
as hex, the way Ray prints them; IDs given to :func:`timeline` may be hex or base64 (as they
appear in the JSON).

Formatters turn the data into aligned text tables (:func:`format_counts` and friends, built on
:func:`format_table`) or JSON (:func:`to_json`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, final

import attrs
import orjson

from trio_events.store._backend import closing, open_reader
from trio_events.store._ray_json import (
    ENTITY_KINDS,
    JsonObject,
    child,
    children,
    entity_of,
    error_info,
    field,
    id_candidates,
    id_hex,
    text,
    timestamp_ns,
)

StorePath = str | os.PathLike[str]

_KIND_ALIASES: Final = {
    "pg": "placement_group",
    "placement-group": "placement_group",
    "placementgroup": "placement_group",
    "submission": "submission_job",
    "submission-job": "submission_job",
    "driver_job": "job",
}


def normalize_kind(kind: str) -> str:
    """The canonical entity kind for ``kind`` (aliases like ``pg`` accepted), or ValueError."""
    lowered = kind.strip().lower()
    canonical = _KIND_ALIASES.get(lowered, lowered)
    if canonical not in ENTITY_KINDS:
        accepted = ", ".join(ENTITY_KINDS)
        raise ValueError(f"Unknown entity kind {kind!r}; use one of {accepted}.")
    return canonical


@final
@attrs.frozen
class Count:
    key: str
    count: int


@final
@attrs.frozen
class Counts:
    total: int
    by_event_type: tuple[Count, ...]
    by_source_type: tuple[Count, ...]


@final
@attrs.frozen
class Transition:
    """One state transition of an entity, with what the event that carried it says about it."""

    timestamp: str
    state: str
    event_type: str
    attempt: int | None
    node_id: str
    worker_id: str
    error_type: str
    error_message: str
    event_id: str


@final
@attrs.frozen
class Timeline:
    kind: str
    entity_id: str
    attempt: int | None
    name: str
    event_count: int
    transitions: tuple[Transition, ...]


@final
@attrs.frozen
class FailedTask:
    task_id: str
    attempt: int
    name: str
    failed_at: str
    error_type: str
    error_message: str
    job_id: str
    node_id: str
    worker_id: str


@final
@attrs.frozen
class EntitySummary:
    kind: str
    entity_id: str
    attempt: int | None
    name: str
    last_state: str
    last_seen: str
    event_count: int


def counts(store_path: StorePath) -> Counts:
    """How many events of each event type and of each source type the store holds."""
    with closing(open_reader(store_path)) as reader:
        total = reader.fetchall("SELECT count(*) FROM events")[0][0]
        by = {}
        for column in ("event_type", "source_type"):
            rows = reader.fetchall(
                f"SELECT {column}, count(*) AS n FROM events GROUP BY {column} "
                f"ORDER BY n DESC, {column}"
            )
            by[column] = tuple(Count(key, n) for key, n in rows)
    return Counts(total, by["event_type"], by["source_type"])


def timeline(
    store_path: StorePath, kind: str, entity_id: str, attempt: int | None = None
) -> Timeline:
    """Every state transition of one entity across all its (partial) events, in time order.

    Transitions repeated by several events (a re-sent partial event) appear once. For a task,
    ``attempt`` narrows to one attempt; without it all attempts are merged.
    """
    kind = normalize_kind(kind)
    candidates = id_candidates(entity_id)
    sql = (
        "SELECT event_id, event_type, entity_id, entity_attempt, entity_name, json FROM events "
        f"WHERE entity_kind = ? AND entity_id IN ({','.join('?' * len(candidates))})"
    )
    params: list[object] = [kind, *candidates]
    if attempt is not None:
        sql += " AND entity_attempt = ?"
        params.append(attempt)
    with closing(open_reader(store_path)) as reader:
        rows = reader.fetchall(sql + " ORDER BY timestamp_ns NULLS FIRST, event_id", params)
    found: dict[tuple[object, ...], tuple[tuple[int, int], Transition]] = {}
    for event_id, event_type, _, event_attempt, _, json_text in rows:
        event = orjson.loads(json_text)
        entity = entity_of(event, event_type)
        if entity is None:
            continue
        for partial in _transitions(kind, entity.payload, event_type, event_attempt):
            transition = attrs.evolve(partial, event_id=bytes(event_id).hex())
            key = (transition.attempt, transition.state, transition.timestamp)
            sort_key = (timestamp_ns(transition.timestamp) or 0, transition.attempt or 0)
            previous = found.get(key)
            if previous is None or (transition.error_message and not previous[1].error_message):
                found[key] = (sort_key, transition)
    ordered = tuple(t for _, t in sorted(found.values(), key=lambda item: item[0]))
    return Timeline(
        kind=kind,
        entity_id=rows[0][2] if rows else candidates[0],
        attempt=attempt,
        name=next((row[4] for row in rows if row[4]), ""),
        event_count=len(rows),
        transitions=ordered,
    )


def _transitions(
    kind: str, payload: JsonObject, event_type: str, attempt: int | None
) -> list[Transition]:
    # Where node, worker and error live differs per kind: task lifecycle events carry them once
    # per event, actor/worker/node/submission transitions carry them per transition.
    payload_node = id_hex(field(payload, "node_id"))
    payload_worker = id_hex(field(payload, "worker_id"))
    task_error = error_info(payload) if kind == "task" else ("", "")
    items = children(payload, "state_transitions")
    has_failed = any(text(item, "state") == "FAILED" for item in items)
    result = []
    for index, item in enumerate(items):
        state = text(item, "state")
        error_type, error_message = _transition_error(item)
        # A task's error belongs to its FAILED transition (or to the last one if none is).
        if any(task_error) and (state == "FAILED" or (not has_failed and index == len(items) - 1)):
            error_type, error_message = task_error
        result.append(
            Transition(
                timestamp=text(item, "timestamp"),
                state=state,
                event_type=event_type,
                attempt=attempt,
                node_id=id_hex(field(item, "node_id")) or payload_node,
                worker_id=id_hex(field(item, "worker_id")) or payload_worker,
                error_type=error_type,
                error_message=error_message,
                event_id="",
            )
        )
    return result


def _transition_error(item: JsonObject) -> tuple[str, str]:
    death_info = child(item, "death_info")  # worker and node transitions
    if death_info is not None:
        kind = text(death_info, "exit_type") or text(death_info, "reason")
        return kind, text(death_info, "exit_detail") or text(death_info, "reason_message")
    death_cause = child(item, "death_cause")  # actor transitions: a oneof of contexts
    if death_cause is not None:
        for name, context in death_cause.items():
            if isinstance(context, Mapping):
                message = text(context, "error_message") or text(
                    context, "formatted_exception_string"
                )
                return text(context, "reason") or name, message
    error_type = text(item, "error_type")  # submission job transitions
    return error_type, text(item, "message") if error_type else ""


def failed_tasks(store_path: StorePath, limit: int = 50) -> list[FailedTask]:
    """Task attempts with a transition to FAILED, most recent first, with their error."""
    with closing(open_reader(store_path)) as reader:
        failures = reader.fetchall(
            "SELECT entity_id, entity_attempt, max(timestamp_ns) AS ns FROM transitions "
            "WHERE entity_kind = 'task' AND state = 'FAILED' "
            "GROUP BY entity_id, entity_attempt "
            "ORDER BY ns DESC NULLS LAST, entity_id, entity_attempt LIMIT ?",
            (limit,),
        )
        result = []
        for task_id, attempt, _ in failures:
            failed_at = reader.fetchall(
                "SELECT timestamp FROM transitions WHERE entity_kind = 'task' AND state = 'FAILED' "
                "AND entity_id = ? AND entity_attempt = ? "
                "ORDER BY timestamp_ns DESC NULLS LAST, timestamp DESC LIMIT 1",
                (task_id, attempt),
            )[0][0]
            details: dict[str, str] = dict.fromkeys(
                ("name", "error_type", "error_message", "job_id", "node_id", "worker_id"), ""
            )
            events = reader.fetchall(
                "SELECT event_type, entity_name, error_type, error_message, json FROM events "
                "WHERE entity_kind = 'task' AND entity_id = ? AND entity_attempt = ? "
                "ORDER BY timestamp_ns NULLS FIRST, event_id",
                (task_id, attempt),
            )
            for event_type, name, error_type, error_message, json_text in events:
                entity = entity_of(orjson.loads(json_text), event_type)
                payload = entity.payload if entity is not None else {}
                found = {
                    "name": name,
                    "error_type": error_type,
                    "error_message": error_message,
                    "job_id": id_hex(field(payload, "job_id")),
                    "node_id": id_hex(field(payload, "node_id")),
                    "worker_id": id_hex(field(payload, "worker_id")),
                }
                for key, value in found.items():
                    details[key] = details[key] or value
            result.append(FailedTask(task_id, attempt, failed_at=failed_at, **details))
    return result


def recent_entities(
    store_path: StorePath, kind: str | None = None, limit: int = 20
) -> list[EntitySummary]:
    """The entities seen most recently (tasks per attempt), with their latest state."""
    where, params = "entity_kind IS NOT NULL", []
    if kind is not None:
        where, params = "entity_kind = ?", [normalize_kind(kind)]
    # Standard SQL both stores read alike: no bare column beside max(), explicit NULL order.
    same_attempt = (
        "(x.entity_attempt = e.entity_attempt "
        "OR (x.entity_attempt IS NULL AND e.entity_attempt IS NULL))"
    )
    sql = f"""
        SELECT e.entity_kind, e.entity_id, e.entity_attempt, max(e.timestamp_ns) AS last_ns,
               (SELECT x.timestamp FROM events x WHERE x.entity_kind = e.entity_kind
                  AND x.entity_id = e.entity_id AND {same_attempt}
                  ORDER BY x.timestamp_ns DESC NULLS LAST, x.timestamp DESC LIMIT 1),
               count(*),
               (SELECT n.entity_name FROM events n WHERE n.entity_kind = e.entity_kind
                  AND n.entity_id = e.entity_id AND n.entity_name != ''
                  ORDER BY n.timestamp_ns NULLS FIRST, n.event_id LIMIT 1),
               (SELECT x.state FROM transitions x WHERE x.entity_kind = e.entity_kind
                  AND x.entity_id = e.entity_id AND {same_attempt}
                  ORDER BY x.timestamp_ns DESC NULLS LAST, x.seq DESC LIMIT 1)
        FROM events e WHERE {where}
        GROUP BY e.entity_kind, e.entity_id, e.entity_attempt
        ORDER BY last_ns DESC NULLS LAST, e.entity_kind, e.entity_id, e.entity_attempt LIMIT ?
    """
    with closing(open_reader(store_path)) as reader:
        rows = reader.fetchall(sql, [*params, limit])
    return [
        EntitySummary(kind_, entity_id, attempt, name or "", state or "", last_seen, n)
        for kind_, entity_id, attempt, _, last_seen, n, name, state in rows
    ]


# ----------------------------------------------------------------------------- formatting


def to_json(value: object) -> str:
    """JSON text for any result of this module (attrs classes, lists of them)."""
    if isinstance(value, list):
        value = [attrs.asdict(item) if attrs.has(type(item)) else item for item in value]
    elif attrs.has(type(value)):
        value = attrs.asdict(value)  # type: ignore[arg-type]
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """An aligned text table: numbers right-aligned, None shown as ``-``, one line per row."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    numeric = [
        bool(cells) and all(_is_number(row[i]) for row in cells) for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _is_number(cell: str) -> bool:
    return cell == "-" or cell.lstrip("-").isdigit()


def _short(identifier: str, width: int = 12) -> str:
    return identifier if len(identifier) <= width else identifier[:width] + "…"


def _summary(message: str, width: int = 100) -> str:
    """The informative line of a possibly multi-line error (a traceback ends with it)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= width else last[: width - 1] + "…"


def format_counts(result: Counts) -> str:
    def table(header: str, rows: Sequence[Count]) -> str:
        return format_table([header, "EVENTS"], [(c.key or "(none)", c.count) for c in rows])

    parts = [
        table("EVENT TYPE", result.by_event_type),
        table("SOURCE TYPE", result.by_source_type),
        f"{result.total} events in total.",
    ]
    return "\n\n".join(parts)


def format_timeline(result: Timeline) -> str:
    title = f"{result.kind} {result.entity_id}"
    if result.attempt is not None:
        title += f" attempt {result.attempt}"
    if result.name:
        title += f" ({result.name})"
    if not result.event_count:
        return f"No events for {title}."
    headers = ["TIME", "ATTEMPT", "STATE", "EVENT", "NODE", "WORKER", "ERROR"]
    rows: list[list[object]] = [
        [
            t.timestamp, t.attempt, t.state, t.event_type, _short(t.node_id), _short(t.worker_id),
            " ".join(p for p in (t.error_type, _summary(t.error_message)) if p),
        ]
        for t in result.transitions
    ]  # fmt: skip
    if result.kind != "task":  # only tasks have attempts
        del headers[1]
        for row in rows:
            del row[1]
    table = format_table(headers, rows)
    count = f"{len(result.transitions)} transitions from {result.event_count} events"
    return f"{title}: {count}.\n\n{table}"


def format_failed_tasks(result: Sequence[FailedTask]) -> str:
    if not result:
        return "No failed tasks."
    rows = [
        (f.failed_at, f.task_id, f.attempt, f.name, f.error_type, _summary(f.error_message))
        for f in result
    ]
    return format_table(["FAILED AT", "TASK ID", "ATTEMPT", "NAME", "ERROR TYPE", "ERROR"], rows)


def format_entities(result: Sequence[EntitySummary]) -> str:
    if not result:
        return "No entities."
    rows = [
        (e.last_seen, e.kind, e.entity_id, e.attempt, e.name, e.last_state, e.event_count)
        for e in result
    ]
    headers = ["LAST SEEN", "KIND", "ID", "ATTEMPT", "NAME", "STATE", "EVENTS"]
    return format_table(headers, rows)
