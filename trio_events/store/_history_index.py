"""The history of a store kept in memory, read once and then followed as the store grows.

:class:`HistoryIndex` reads the store read-only in append order (SQLite's rowid, PostgreSQL's
``seq``; see ``Reader.read_new``), folds every event into a
:class:`ClusterHistory`, reconciles, and builds the lookups the state API and the page need:
task attempts sorted by task id (Ray's list order) and, per session, by state, job, node, name
and worker, so a filtered ``/api/v0/tasks?limit=100`` walks only the matching attempts.
:meth:`HistoryIndex.refresh` reads only rows added since the last read (the store is
append-only: ``INSERT OR IGNORE``, ``ON CONFLICT DO NOTHING``), so a history server next to
a running collector follows it.

The index is synchronous and not thread-safe: the server calls it from one worker thread at a
time (a ``CapacityLimiter(1)``), never on the event loop.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Final, TypeVar, final

import attrs
import orjson

from trio_events.store._backend import Reader, open_reader
from trio_events.store._history_reconcile import reconcile
from trio_events.store._history_state import ClusterHistory, Entity, TaskAttempt

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterable, Sequence

_BATCH: Final = 20_000
_IndexKey = tuple[bool, str | None, str, str]
_MEMO: Final = 256
_V = TypeVar("_V")
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
    """The name Ray shows (computed once per rebuild of the index; see :func:`_task_name`)."""
    name = attempt.display_name
    return _task_name(attempt) if name is None else name


def _task_name(attempt: TaskAttempt) -> str:
    """The name Ray shows: the definition's name, else the function's call string.

    As in Ray, an actor task not given a name of its own is named after its actor's
    ``__repr__`` when the actor has one (``Trainer(rank=0).step``).
    """
    definition = attempt.definition or {}
    name = ""
    for key in ("taskName", "task_name", "actorTaskName", "actor_task_name"):
        value = definition.get(key)
        if isinstance(value, str) and value:
            name = value
            break
    function = func_or_class_name(attempt)
    name = name or function
    repr_name = attempt.lifecycle_extra.get("actor_repr_name")
    renamed = attempt.task_type == "ACTOR_TASK" and name == function
    if renamed and isinstance(repr_name, str) and repr_name:
        return f"{repr_name}.{name.rsplit('.', 1)[-1]}"
    return name


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
@attrs.frozen
class JobView:
    newest_first: list[TaskAttempt]
    state_counts: dict[str, int]
    nodes: tuple[str, ...]


@final
class HistoryIndex:
    """Everything the history server answers from, built from one store."""

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(store_path)
        self._reader: Reader = open_reader(self._path)
        self.history = ClusterHistory()
        self.generation = 0  # bumped whenever the folded state changes
        self.loaded_at = 0.0
        self.load_seconds = 0.0
        self.tasks_by_id: list[TaskAttempt] = []
        # (drivers included?, session or None for all, column, lower-cased value) -> attempts
        # in task-id order; column "" holds every attempt of the scope.
        self._task_index: dict[_IndexKey, list[TaskAttempt]] = {}
        self._values: dict[tuple[bool, str | None, str], set[str]] = {}
        self.sessions: list[Session] = []
        # Answers computed from the current fold (summaries, per-job views); cleared on rebuild.
        self.memo: dict[Hashable, object] = {}

    @property
    def path(self) -> str:
        return self._path

    def close(self) -> None:
        self._reader.close()

    def refresh(self) -> int:
        """Fold events stored since the last call; returns how many were read."""
        started = time.perf_counter()
        read = 0
        while True:
            rows = self._reader.read_new(_BATCH)
            if not rows:
                break
            apply = self.history.apply
            loads = orjson.loads
            for event_type, session, stamp, json_text in rows:
                apply(loads(json_text), event_type, session=session, stamp=stamp)
            read += len(rows)
        if read or not self.generation:
            self._rebuild()
            self.generation += 1
        self.loaded_at = time.time()
        self.load_seconds = time.perf_counter() - started
        return read

    def _rebuild(self) -> None:
        history = self.history
        reconcile(history)
        for attempt in history.tasks.values():
            attempt.display_name = _task_name(attempt)
        tasks = sorted(history.tasks.values(), key=lambda a: (a.task_id, a.attempt, a.session))
        self.tasks_by_id = tasks
        self.memo.clear()
        index: dict[_IndexKey, list[TaskAttempt]] = {}
        values_seen: dict[tuple[bool, str | None, str], set[str]] = {}
        for attempt in tasks:
            drivers = (True,) if attempt.task_type == "DRIVER_TASK" else (True, False)
            scopes = [(d, s) for d in drivers for s in (None, attempt.session)]
            for scope in scopes:
                index.setdefault((*scope, "", ""), []).append(attempt)
            values = (
                attempt.state,
                attempt.job_id,
                attempt.node_id,
                attempt.worker_id,
                task_name(attempt).lower(),
                attempt.task_type or "NORMAL_TASK",
            )
            for column, value in zip(INDEXED_TASK_COLUMNS, values, strict=True):
                lowered = value.lower()
                for drivers_too, session in scopes:
                    index.setdefault((drivers_too, session, column, lowered), []).append(attempt)
                    values_seen.setdefault((drivers_too, session, column), set()).add(lowered)
        self._task_index = index
        self._values = values_seen
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
        self, session: str | None, equals: Iterable[tuple[str, str]], *, drivers: bool = True
    ) -> list[TaskAttempt]:
        """Attempts in task-id order having every indexed (column, value) of ``equals``.

        Narrowed by the most selective indexed equality; the caller checks the rest.
        """
        found, _ = self.narrow(session, [(c, "=", v) for c, v in equals], drivers=drivers)
        return found

    def narrow(
        self, session: str | None, filters: Sequence[tuple[str, str, str]], *, drivers: bool
    ) -> tuple[list[TaskAttempt], int | None]:
        """The attempts (task-id order) matching the most selective indexed filter, and its
        position in ``filters`` (None when no filter could use an index).

        ``=`` takes one value's list; ``!=`` the lists of every other value of the column (all
        values are lower-cased, as Ray compares strings case-insensitively). Only that filter
        is settled; the caller checks the others on what comes back.
        """
        best: tuple[int, int, str, str, str] | None = None
        for position, (column, predicate, value) in enumerate(filters):
            wanted = value.lower()
            if column not in INDEXED_TASK_COLUMNS or not wanted:
                continue
            if predicate == "=":
                size = len(self._task_index.get((drivers, session, column, wanted), ()))
            else:
                others = self._values.get((drivers, session, column), set()) - {wanted}
                size = sum(len(self._task_index[(drivers, session, column, v)]) for v in others)
            if best is None or size < best[0]:
                best = (size, position, column, predicate, wanted)
        if best is None:
            return self._task_index.get((drivers, session, "", ""), []), None
        _, position, column, predicate, wanted = best
        if predicate == "=":
            return self._task_index.get((drivers, session, column, wanted), []), position
        lists = [
            self._task_index[(drivers, session, column, v)]
            for v in self._values.get((drivers, session, column), set()) - {wanted}
        ]
        merged = [a for found in lists for a in found]
        if len(lists) > 1:
            merged.sort(key=lambda a: (a.task_id, a.attempt, a.session))
        return merged, position

    def remember(self, key: Hashable, value: _V) -> _V:
        """Keep ``value`` until the next fold (at most _MEMO answers; then start afresh)."""
        if len(self.memo) >= _MEMO:
            self.memo.clear()
        self.memo[key] = value
        return value

    def failures(self, session: str | None) -> list[TaskAttempt]:
        """Failed attempts (drivers included), the most recent end first."""
        key = ("failures", session)
        found = self.memo.get(key)
        if found is None:
            failed = self._task_index.get((True, session, "state", "failed"), [])
            found = self.remember(key, sorted(failed, key=lambda a: a.end_ns or 0, reverse=True))
        assert isinstance(found, list)
        return found

    def job_view(self, session: str, job_id: str) -> JobView:
        """A job's attempts newest first, with counts by state and the nodes they ran on."""
        key = ("job", session, job_id)
        found = self.memo.get(key)
        if found is None:
            every = self.candidate_tasks(session, [("job_id", job_id)])
            counts: dict[str, int] = {}
            for attempt in every:
                counts[attempt.state] = counts.get(attempt.state, 0) + 1
            found = self.remember(
                key,
                JobView(
                    newest_first=sorted(every, key=lambda a: a.creation_ns or 0, reverse=True),
                    state_counts=counts,
                    nodes=tuple(sorted({a.node_id for a in every if a.node_id})),
                ),
            )
        assert isinstance(found, JobView)
        return found

    def task_count(self, session: str | None, exclude_driver: bool) -> int:
        """How many task attempts a session has (drivers left out when asked)."""
        return len(self._task_index.get((not exclude_driver, session, "", ""), []))

    def entities(self, kind: str, session: str | None) -> list[Entity]:
        table = self.history.entities[kind]
        found = [e for (s, _), e in table.items() if session is None or s == session]
        found.sort(key=lambda e: e.entity_id)
        return found

    def entity(self, kind: str, session: str, entity_id: str) -> Entity | None:
        return self.history.entities[kind].get((session, entity_id))
