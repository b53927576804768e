"""The history of a store kept in memory, read once and then followed as the store grows.

:class:`HistoryIndex` reads the store read-only in rowid order, folds every event into a
:class:`ClusterHistory`, reconciles, and builds the lookups the state API and the page need:
task attempts sorted by task id (Ray's list order) and, per session, by state, job, node, name
and worker, so a filtered ``/api/v0/tasks?limit=100`` walks only the matching attempts.
:meth:`HistoryIndex.refresh` reads only rows added since the last read (the store is
append-only: ``INSERT OR IGNORE``), so a history server next to a running collector follows it.

The index is synchronous and not thread-safe: the server calls it from one worker thread at a
time (a ``CapacityLimiter(1)``), never on the event loop.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Final, final

import attrs
import orjson

from trio_events.store._history_state import ClusterHistory, Entity, TaskAttempt
from trio_events.store._sqlite import connect_read_only

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterable

_BATCH: Final = 20_000
# Columns of a task attempt that have an index per session: Ray's common list filters.
INDEXED_TASK_COLUMNS: Final = ("state", "job_id", "node_id", "worker_id", "name", "type")


@final
@attrs.frozen
class Session:
    """One Ray session (one cluster's life) seen in the store."""

    name: str
    first_ns: int
    last_ns: int
    events: int
    tasks: int
    failed_tasks: int
    jobs: tuple[str, ...]
    nodes: int


def task_name(attempt: TaskAttempt) -> str:
    """The name Ray shows: the definition's name, else the function's call string."""
    definition = attempt.definition or {}
    for key in ("taskName", "task_name", "actorTaskName", "actor_task_name"):
        value = definition.get(key)
        if isinstance(value, str) and value:
            return value
    return func_or_class_name(attempt)


def func_or_class_name(attempt: TaskAttempt) -> str:
    definition = attempt.definition or {}
    descriptor = None
    for key in ("taskFunc", "task_func", "actorFunc", "actor_func"):
        found = definition.get(key)
        if isinstance(found, dict):
            descriptor = found
            break
    if descriptor is None:
        return ""
    for inner in descriptor.values():
        if isinstance(inner, dict):
            cls = inner.get("className") or inner.get("class_name") or ""
            fn = inner.get("functionName") or inner.get("function_name") or ""
            return f"{cls}.{fn}" if cls and fn else str(fn or cls)
    return ""


@final
class HistoryIndex:
    """Everything the history server answers from, built from one store."""

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(store_path)
        self._conn: sqlite3.Connection = connect_read_only(self._path)
        self.history = ClusterHistory()
        self._last_rowid = 0
        self.generation = 0  # bumped whenever the folded state changes
        self.loaded_at = 0.0
        self.load_seconds = 0.0
        self.tasks_by_id: list[TaskAttempt] = []
        self._task_index: dict[tuple[str | None, str, str], list[TaskAttempt]] = {}
        self.sessions: list[Session] = []

    @property
    def path(self) -> str:
        return self._path

    def close(self) -> None:
        self._conn.close()

    def refresh(self) -> int:
        """Fold events stored since the last call; returns how many were read."""
        started = time.perf_counter()
        read = 0
        while True:
            rows = self._conn.execute(
                "SELECT rowid, event_type, json FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (self._last_rowid, _BATCH),
            ).fetchall()
            if not rows:
                break
            apply = self.history.apply
            loads = orjson.loads
            for _, event_type, json_text in rows:
                apply(loads(json_text), event_type)
            self._last_rowid = rows[-1][0]
            read += len(rows)
        if read or not self.generation:
            self._rebuild()
            self.generation += 1
        self.loaded_at = time.time()
        self.load_seconds = time.perf_counter() - started
        return read

    def _rebuild(self) -> None:
        history = self.history
        history.reconcile()
        tasks = sorted(history.tasks.values(), key=lambda a: (a.task_id, a.attempt, a.session))
        self.tasks_by_id = tasks
        index: dict[tuple[str | None, str, str], list[TaskAttempt]] = {}
        for attempt in tasks:
            for session in (None, attempt.session):
                index.setdefault((session, "", ""), []).append(attempt)
            values = (
                attempt.state,
                attempt.job_id,
                attempt.node_id,
                attempt.worker_id,
                task_name(attempt).lower(),
                attempt.task_type or "NORMAL_TASK",
            )
            for column, value in zip(INDEXED_TASK_COLUMNS, values, strict=True):
                for session in (None, attempt.session):  # None: every session
                    index.setdefault((session, column, value.lower()), []).append(attempt)
        self._task_index = index
        self.sessions = self._sessions()

    def _sessions(self) -> list[Session]:
        history = self.history
        per: dict[str, list[int]] = {name: [0, 0] for name in history.sessions}
        for attempt in history.tasks.values():
            counts = per.setdefault(attempt.session, [0, 0])
            counts[0] += 1
            counts[1] += attempt.state == "FAILED"
        jobs: dict[str, list[str]] = {}
        for (session, job_id), _ in sorted(history.entities["job"].items()):
            jobs.setdefault(session, []).append(job_id)
        for attempt in history.tasks.values():  # jobs known only from their tasks
            if attempt.job_id and attempt.job_id not in jobs.setdefault(attempt.session, []):
                jobs[attempt.session].append(attempt.job_id)
        nodes: dict[str, int] = {}
        for session, _ in history.entities["node"]:
            nodes[session] = nodes.get(session, 0) + 1
        result = [
            Session(
                name=name,
                first_ns=span[0],
                last_ns=span[1],
                events=span[2],
                tasks=per[name][0],
                failed_tasks=per[name][1],
                jobs=tuple(sorted(jobs.get(name, []))),
                nodes=nodes.get(name, 0),
            )
            for name, span in history.sessions.items()
        ]
        result.sort(key=lambda s: (s.last_ns, s.name), reverse=True)
        return result

    def latest_session(self) -> str | None:
        return self.sessions[0].name if self.sessions else None

    def candidate_tasks(
        self, session: str | None, equals: Iterable[tuple[str, str]]
    ) -> list[TaskAttempt]:
        """Task attempts in task-id order, narrowed by the most selective indexed equality.

        ``equals`` holds (column, value) pairs that must all hold; only the narrowing is done
        here, the caller still applies every filter to what comes back.
        """
        best: list[TaskAttempt] | None = None
        for column, value in equals:
            if column in INDEXED_TASK_COLUMNS:
                found = self._task_index.get((session, column, value.lower()), [])
                if best is None or len(found) < len(best):
                    best = found
        if best is not None:
            return best
        return self._task_index.get((session, "", ""), [])

    def task_count(self, session: str | None, exclude_driver: bool) -> int:
        """How many task attempts a session has (drivers left out when asked)."""
        count = len(self._task_index.get((session, "", ""), []))
        if exclude_driver:
            count -= len(self._task_index.get((session, "type", "driver_task"), []))
        return count

    def entities(self, kind: str, session: str | None) -> list[Entity]:
        table = self.history.entities[kind]
        found = [e for (s, _), e in table.items() if session is None or s == session]
        found.sort(key=lambda e: e.entity_id)
        return found

    def entity(self, kind: str, session: str, entity_id: str) -> Entity | None:
        return self.history.entities[kind].get((session, entity_id))
