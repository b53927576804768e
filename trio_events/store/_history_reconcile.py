"""Settling what the events left open (the reconciliation rules of docs/history.md).

A cluster torn down mid-job leaves attempts that never reported an end. After folding, a task
attempt that is not terminal although its worker died, its node died or its job finished is
shown ``FAILED`` with the reason (the earliest cause wins), the way Ray's GCS marks such tasks
when it learns of the death; an actor not ``DEAD`` whose node died or whose (non-detached) job
finished is shown ``DEAD``. Reconciling again after more events starts from the reported states.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trio_events.store._ray_json import child, field, id_hex, text

if TYPE_CHECKING:
    from trio_events.store._history_state import ClusterHistory, Key


def reconcile(history: ClusterHistory) -> None:
    """Settle non-terminal tasks and live actors whose worker, node or job has ended."""
    nodes_dead = _ended(history, "node", "DEAD")
    workers_dead = _ended(history, "worker", "DEAD")
    jobs_done = _ended(history, "job", "FINISHED")
    for attempt in history.tasks.values():
        attempt.reconciled, attempt.end_override = "", None
        if attempt.terminal:
            continue
        causes = []
        worker = workers_dead.get((attempt.session, attempt.worker_id))
        if attempt.worker_id and worker is not None:
            causes.append(
                (
                    worker[0],
                    "WORKER_DIED",
                    (
                        f"Worker running the task ({attempt.worker_id}) died with exit_type: "
                        f"{worker[1] or 'UNKNOWN'} with error_message: {worker[2]}"
                    ),
                )
            )
        node = nodes_dead.get((attempt.session, attempt.node_id))
        if attempt.node_id and node is not None:
            causes.append(
                (
                    node[0],
                    "NODE_DIED",
                    (
                        f"Task failed because the node ({attempt.node_id}) where it was "
                        f"running died: {node[1] or 'UNKNOWN'} {node[2]}".rstrip()
                    ),
                )
            )
        job = jobs_done.get((attempt.session, attempt.job_id))
        if job is not None:
            causes.append(
                (
                    job[0],
                    "WORKER_DIED",
                    (
                        f"Job finishes ({attempt.job_id}) as driver exits. "
                        "Marking all non-terminal tasks as failed."
                    ),
                )
            )
        if causes:
            when, error_type, message = min(causes)
            attempt.reconciled = message
            attempt.end_override = when
            attempt.error_type, attempt.error_message = error_type, message
    for actor in history.entities["actor"].values():
        actor.reconciled = None
        last = actor.last()
        if last is None or last.state == "DEAD":
            continue
        node_id = id_hex(field(last.details, "node_id"))
        job_id = id_hex(field(actor.definition or {}, "job_id"))
        actor_causes: list[tuple[int, str]] = []
        node = nodes_dead.get((actor.session, node_id))
        if node_id and node is not None:
            actor_causes.append((node[0], f"The actor's node ({node_id}) died: {node[1]}"))
        job = jobs_done.get((actor.session, job_id))
        if job is not None and field(actor.definition or {}, "is_detached") is not True:
            actor_causes.append((job[0], f"The actor's job ({job_id}) finished."))
        if actor_causes:
            when, reason = min(actor_causes)
            actor.reconciled = ("DEAD", when, reason)


def _ended(history: ClusterHistory, kind: str, state: str) -> dict[Key, tuple[int, str, str]]:
    ended: dict[Key, tuple[int, str, str]] = {}
    for key, entity in history.entities[kind].items():
        for transition in entity.transitions.values():
            if transition.state != state:
                continue
            death = child(transition.details, "death_info") or {}
            reason = text(death, "exit_type") or text(death, "reason")
            detail = text(death, "exit_detail") or text(death, "reason_message")
            found = ended.get(key)
            if found is None or transition.ts_ns < found[0]:
                ended[key] = (transition.ts_ns, reason, detail)
    return ended
