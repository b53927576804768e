"""Rebuilding what happened in a Ray cluster from its (partial, unordered) events.

Ray reports one task attempt in pieces: the owner sends ``PENDING_*`` and the terminal state, the
executing worker sends ``RUNNING`` with its node and worker; a definition may arrive after the
lifecycle, a retried export repeats an event, and the store hands rows back in whatever order
they were received. :class:`ClusterHistory` folds events in any order into one record per task
attempt, actor, job, node, worker and placement group. Every fold is a merge that commutes:

- a state keeps the earliest timestamp any event gave it (a repeat changes nothing);
- a definition field keeps the first non-empty value (definitions of one entity agree);
- where two events disagree (the node of an attempt), the value reported with the latest state
  wins, ties broken by the value itself, so the order of arrival never matters.

The current state is then derived, not stored: for a task a terminal state wins (``FAILED`` over
``FINISHED``), otherwise the latest state by time (by Ray's enum order on a tie). Entities are
kept apart per Ray session (``session_name``), so one store can hold many clusters.

:func:`._history_reconcile.reconcile` then settles what the events left open (docs/history.md):
a task attempt that never reached a terminal state although its worker died, its node died or its
job finished is shown ``FAILED`` with the reason, the way Ray's GCS marks such tasks; an actor
whose node died or whose job finished is shown ``DEAD``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final, final

from trio_events.store._ray_json import (
    JsonObject,
    child,
    children,
    field,
    id_hex,
    integer,
    text,
    timestamp_ns,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

Key = tuple[str, str]  # (session name, entity id)

TASK_STATES: Final = (
    "NIL",
    "PENDING_ARGS_AVAIL",
    "PENDING_NODE_ASSIGNMENT",
    "PENDING_OBJ_STORE_MEM_AVAIL",
    "PENDING_ARGS_FETCH",
    "SUBMITTED_TO_WORKER",
    "PENDING_ACTOR_TASK_ARGS_FETCH",
    "PENDING_ACTOR_TASK_ORDERING_OR_CONCURRENCY",
    "RUNNING",
    "RUNNING_IN_RAY_GET",
    "RUNNING_IN_RAY_WAIT",
    "FINISHED",
    "FAILED",
    "GETTING_AND_PINNING_ARGS",
)
TASK_STATE_RANK: Final = {name: rank for rank, name in enumerate(TASK_STATES)}
TERMINAL_TASK_STATES: Final = frozenset({"FINISHED", "FAILED"})
_ACTOR_RANK: Final = {
    s: r for r, s in enumerate(("DEPENDENCIES_UNREADY", "PENDING_CREATION", "ALIVE", "RESTARTING"))
} | {"DEAD": 9}


def _rank(ranks: Mapping[str, int], state: str) -> int:
    return ranks.get(state, len(ranks))


def _ns_to_ms(ns: int | None) -> int | None:
    return None if ns is None else ns // 1_000_000


@final
class Transition:
    """One state change of an entity: the state, when, and what the event said about it."""

    __slots__ = ("details", "state", "ts_ns")

    def __init__(self, state: str, ts_ns: int, details: JsonObject) -> None:
        self.state = state
        self.ts_ns = ts_ns
        self.details = details


def _merge_transitions(
    into: dict[tuple[str, int], Transition], payload: JsonObject
) -> tuple[int, ...]:
    """Add the payload's transitions (keyed by state and time); returns their timestamps."""
    stamps = []
    for item in children(payload, "state_transitions"):
        state = text(item, "state") or "UNSPECIFIED"
        ts = timestamp_ns(field(item, "timestamp")) or 0
        key = (state, ts)
        previous = into.get(key)
        if previous is None or len(item) > len(previous.details):  # keep the fuller copy
            into[key] = Transition(state, ts, item)
        stamps.append(ts)
    return tuple(stamps)


def ordered(
    transitions: Mapping[tuple[str, int], Transition], ranks: Mapping[str, int]
) -> list[Transition]:
    return sorted(transitions.values(), key=lambda t: (t.ts_ns, _rank(ranks, t.state), t.state))


@final
class TaskAttempt:
    """One attempt of one task, merged from every event about it."""

    __slots__ = (
        "attempt",
        "definition",
        "display_name",
        "end_override",
        "error_message",
        "error_type",
        "evidence",
        "job_id",
        "lifecycle_extra",
        "node_id",
        "profile",
        "reconciled",
        "session",
        "states",
        "task_id",
        "task_type",
        "worker_id",
        "worker_pid",
    )

    def __init__(self, session: str, task_id: str, attempt: int) -> None:
        self.session = session
        self.task_id = task_id
        self.attempt = attempt
        self.definition: JsonObject | None = None
        self.task_type = ""  # NORMAL_TASK, ACTOR_TASK, ...; from the definition
        self.job_id = ""
        self.states: dict[str, int] = {}  # state -> earliest timestamp (ns)
        self.node_id = ""
        self.worker_id = ""
        self.worker_pid = 0
        self.evidence = (-1, "")  # (latest state time, node id) the node/worker were taken from
        self.error_type = ""
        self.error_message = ""
        self.lifecycle_extra: dict[str, object] = {}
        self.profile: list[JsonObject] = []
        self.reconciled = ""  # why the state was settled by reconcile(), else empty
        self.end_override: int | None = None
        self.display_name: str | None = None  # set by HistoryIndex once all events are folded

    @property
    def reported_state(self) -> str:
        """The state the events themselves give (before reconciliation)."""
        states = self.states
        if "FAILED" in states:
            return "FAILED"
        if "FINISHED" in states:
            return "FINISHED"
        if not states:
            return "NIL"
        return max(states.items(), key=lambda item: (item[1], TASK_STATE_RANK.get(item[0], 99)))[0]

    @property
    def state(self) -> str:
        return "FAILED" if self.reconciled else self.reported_state

    @property
    def terminal(self) -> bool:
        return not TERMINAL_TASK_STATES.isdisjoint(self.states)

    def state_ns(self, state: str) -> int | None:
        return self.states.get(state)

    @property
    def start_ns(self) -> int | None:
        return self.states.get("RUNNING")

    @property
    def creation_ns(self) -> int | None:
        return self.states.get("PENDING_ARGS_AVAIL") or (min(self.states.values(), default=None))

    @property
    def end_ns(self) -> int | None:
        if "FAILED" in self.states:
            return self.states["FAILED"]
        if "FINISHED" in self.states:
            return self.states["FINISHED"]
        return self.end_override

    def merge_definition(self, payload: JsonObject, actor_task: bool) -> None:
        if self.definition is None:
            self.definition = payload
            self.task_type = (
                "ACTOR_TASK" if actor_task else (text(payload, "task_type") or "NORMAL_TASK")
            )
        self.job_id = self.job_id or id_hex(field(payload, "job_id"))

    def merge_lifecycle(self, payload: JsonObject) -> None:
        latest = -1
        for item in children(payload, "state_transitions"):
            state = text(item, "state") or "NIL"
            ts = timestamp_ns(field(item, "timestamp")) or 0
            known = self.states.get(state)
            if known is None or ts < known:
                self.states[state] = ts
            latest = max(latest, ts)
        node = _hex(field(payload, "node_id"))
        if node:
            worker = _hex(field(payload, "worker_id"))
            evidence = (latest, node + worker)
            if evidence > self.evidence:
                self.evidence = evidence
                self.node_id, self.worker_id = node, worker
                self.worker_pid = integer(payload, "worker_pid") or self.worker_pid
        self.job_id = self.job_id or _hex(field(payload, "job_id"))
        info = child(payload, "ray_error_info")
        if info is not None:
            candidate = (text(info, "error_type"), text(info, "error_message"))
            # One failure per attempt; keep the fullest report whichever arrives first.
            if len(candidate[1]) > len(self.error_message) or (
                len(candidate[1]) == len(self.error_message)
                and candidate > (self.error_type, self.error_message)
            ):
                self.error_type, self.error_message = candidate
        for name in ("actor_repr_name", "is_debugger_paused", "task_log_info"):
            value = field(payload, name)
            if value is not None and name not in self.lifecycle_extra:
                self.lifecycle_extra[name] = value


@final
class Entity:
    """An actor, job, node, worker or placement group: a definition and its transitions."""

    __slots__ = ("definition", "entity_id", "extra", "kind", "reconciled", "session", "transitions")

    def __init__(self, kind: str, session: str, entity_id: str) -> None:
        self.kind = kind
        self.session = session
        self.entity_id = entity_id
        self.definition: JsonObject | None = None
        self.transitions: dict[tuple[str, int], Transition] = {}
        self.reconciled: tuple[str, int, str] | None = None  # (state, time, reason)
        self.extra: dict[str, str] = {}  # what a lifecycle says beside its transitions

    def merge_definition(self, payload: JsonObject) -> None:
        if self.definition is None:
            self.definition = payload

    def history(self) -> list[Transition]:
        ranks = _ACTOR_RANK if self.kind == "actor" else {}
        return ordered(self.transitions, ranks)

    @property
    def reported_state(self) -> str:
        history = self.history()
        return history[-1].state if history else ""

    @property
    def state(self) -> str:
        return self.reconciled[0] if self.reconciled else self.reported_state

    def first_ns(self, state: str) -> int | None:
        return min((t.ts_ns for t in self.transitions.values() if t.state == state), default=None)

    def last(self) -> Transition | None:
        history = self.history()
        return history[-1] if history else None


_DEFINITIONS: Final = {
    "ACTOR_DEFINITION_EVENT": ("actor_definition_event", "actor", "actor_id"),
    "DRIVER_JOB_DEFINITION_EVENT": ("driver_job_definition_event", "job", "job_id"),
    "NODE_DEFINITION_EVENT": ("node_definition_event", "node", "node_id"),
    "WORKER_DEFINITION_EVENT": ("worker_definition_event", "worker", "worker_id"),
    "PLACEMENT_GROUP_DEFINITION_EVENT": (
        "placement_group_definition_event",
        "placement_group",
        "placement_group_id",
    ),
    "SUBMISSION_JOB_DEFINITION_EVENT": (
        "submission_job_definition_event",
        "submission_job",
        "submission_id",
    ),
}
_LIFECYCLES: Final = {
    "ACTOR_LIFECYCLE_EVENT": ("actor_lifecycle_event", "actor", "actor_id"),
    "DRIVER_JOB_LIFECYCLE_EVENT": ("driver_job_lifecycle_event", "job", "job_id"),
    "NODE_LIFECYCLE_EVENT": ("node_lifecycle_event", "node", "node_id"),
    "WORKER_LIFECYCLE_EVENT": ("worker_lifecycle_event", "worker", "worker_id"),
    "PLACEMENT_GROUP_LIFECYCLE_EVENT": (
        "placement_group_lifecycle_event",
        "placement_group",
        "placement_group_id",
    ),
    "SUBMISSION_JOB_LIFECYCLE_EVENT": (
        "submission_job_lifecycle_event",
        "submission_job",
        "submission_id",
    ),
}
_TASK_PAYLOADS: Final = {
    "TASK_LIFECYCLE_EVENT": "task_lifecycle_event",
    "TASK_DEFINITION_EVENT": "task_definition_event",
    "ACTOR_TASK_DEFINITION_EVENT": "actor_task_definition_event",
}


def _hex(value: object) -> str:
    """:func:`id_hex`, remembered: node, worker, job and task ids repeat across events."""
    return _hex_text(value) if isinstance(value, str) else ""


@functools.lru_cache(maxsize=1 << 16)
def _hex_text(value: str) -> str:
    return id_hex(value)


KINDS: Final = ("actor", "job", "node", "worker", "placement_group", "submission_job")


@final
class ClusterHistory:
    """Every entity of every session, folded from events given in any order.

    :func:`~trio_events.store._history_reconcile.reconcile` settles what the events left open.
    """

    def __init__(self) -> None:
        self.tasks: dict[tuple[str, str, int], TaskAttempt] = {}
        self.entities: dict[str, dict[Key, Entity]] = {kind: {} for kind in KINDS}
        self.sessions: dict[str, list[int]] = {}  # session -> [first ns, last ns, events]
        self.events = 0
        self._ids: dict[str, str] = {}

    def _intern(self, value: str) -> str:
        return self._ids.setdefault(value, value)

    def task(self, session: str, task_id: str, attempt: int) -> TaskAttempt:
        key = (session, task_id, attempt)
        found = self.tasks.get(key)
        if found is None:
            found = self.tasks[key] = TaskAttempt(session, task_id, attempt)
        return found

    def entity(self, kind: str, session: str, entity_id: str) -> Entity:
        table = self.entities[kind]
        key = (session, entity_id)
        found = table.get(key)
        if found is None:
            found = table[key] = Entity(kind, session, entity_id)
        return found

    def apply(
        self,
        event: JsonObject,
        event_type: str,
        *,
        session: str | None = None,
        stamp: int | None = None,
    ) -> None:
        """Fold one event (Ray's JSON, either key style) into the history.

        ``session`` and ``stamp`` (the event's session name and time in ns), when the caller
        has them already (the store keeps both as columns), spare reading them from the JSON.
        """
        if session is None:
            session = text(event, "session_name")
            stamp = timestamp_ns(field(event, "timestamp"))
        session = self._intern(session)
        self.events += 1
        span = self.sessions.get(session)
        if span is None:
            self.sessions[session] = [stamp or 0, stamp or 0, 1]
        else:
            span[2] += 1
            if stamp is not None:
                span[0] = min(span[0], stamp) if span[0] else stamp
                span[1] = max(span[1], stamp)
        name = _TASK_PAYLOADS.get(event_type)
        if name is not None:
            payload = child(event, name)
            if payload is None:
                return
            attempt = self.task(
                session,
                self._intern(_hex(field(payload, "task_id"))),
                integer(payload, "task_attempt") or 0,
            )
            if event_type == "TASK_LIFECYCLE_EVENT":
                attempt.merge_lifecycle(payload)
                attempt.node_id = self._intern(attempt.node_id)
                attempt.worker_id = self._intern(attempt.worker_id)
            else:
                attempt.merge_definition(payload, event_type == "ACTOR_TASK_DEFINITION_EVENT")
            attempt.job_id = self._intern(attempt.job_id)
            return
        if event_type == "TASK_PROFILE_EVENT":
            payload = child(event, "task_profile_events")
            if payload is not None:
                attempt = self.task(
                    session,
                    self._intern(id_hex(field(payload, "task_id"))),
                    integer(payload, "attempt_number") or 0,
                )
                profile = child(payload, "profile_events")
                if profile is not None and profile not in attempt.profile:
                    attempt.profile.append(profile)
                attempt.job_id = attempt.job_id or self._intern(id_hex(field(payload, "job_id")))
            return
        spec = _DEFINITIONS.get(event_type) or _LIFECYCLES.get(event_type)
        if spec is None:
            return
        payload = child(event, spec[0])
        if payload is None:
            return
        raw_id = field(payload, spec[2])
        entity_id = text(payload, spec[2]) if spec[1] == "submission_job" else id_hex(raw_id)
        entity = self.entity(spec[1], session, self._intern(entity_id))
        if event_type in _DEFINITIONS:
            entity.merge_definition(payload)
        else:
            _merge_transitions(entity.transitions, payload)
            if spec[1] == "worker":
                job = id_hex(field(payload, "job_id"))
                if job:  # the lifecycle names the worker's job
                    entity.extra.setdefault("job_id", job)


def task_ms(attempt: TaskAttempt) -> tuple[int | None, int | None, int | None]:
    """(creation, start, end) of an attempt in Unix milliseconds, as Ray's state API gives them."""
    return _ns_to_ms(attempt.creation_ns), _ns_to_ms(attempt.start_ns), _ns_to_ms(attempt.end_ns)
