"""A Chrome trace (``chrome://tracing``, Perfetto) of task attempts, as ``ray timeline`` writes it.

Ray's ``chrome_tracing_dump`` (``ray/_private/profiling.py``) turns each task's profile events
into complete events (``"ph": "X"``) with ``pid`` = an index per node IP and ``tid`` = an index
per (node, worker), named by metadata events (``"ph": "M"``, ``process_name`` ``Node <ip>``,
``thread_name`` ``worker:<id>``); times are microseconds. We write the same from
``TASK_PROFILE_EVENT`` events. An attempt without profile events (Ray exports them only when
profiling is on) still gets one ``task`` span from its lifecycle: ``RUNNING`` to its terminal
(or reconciled) end, on its node and worker, so a trace exists for every store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from trio_events.store._history_index import HistoryIndex, func_or_class_name, task_name
from trio_events.store._history_rows import profiling_data
from trio_events.store._ray_json import field, id_hex, text

if TYPE_CHECKING:
    from collections.abc import Iterable

    from trio_events.store._history_state import TaskAttempt

# Ray's _default_color_mapping; anything else is "generic_work".
_COLORS: Final = {
    "worker_idle": "cq_build_abandoned",
    "task": "rail_response",
    "task:deserialize_arguments": "rail_load",
    "task:execute": "rail_animation",
    "task:store_outputs": "rail_idle",
    "wait_for_function": "detailed_memory_dump",
    "ray.get": "good",
    "ray.put": "terrible",
    "ray.wait": "vsync_highlight_color",
    "submit_task": "background_memory_dump",
    "fetch_and_run_function": "detailed_memory_dump",
    "register_remote_function": "detailed_memory_dump",
}
_FAILED_COLOR: Final = "terrible"


class _Lanes:
    def __init__(self) -> None:
        self.nodes: dict[str, int] = {}
        self.workers: dict[tuple[int, str], int] = {}

    def lane(self, node: str, component: str) -> tuple[int, int]:
        pid = self.nodes.setdefault(node, len(self.nodes))
        tid = self.workers.setdefault((pid, component), len(self.workers))
        return pid, tid

    def metadata(self) -> list[dict[str, object]]:
        events: list[dict[str, object]] = [
            {
                "name": "process_name",
                "args": {"name": f"Node {node}"},
                "pid": pid,
                "tid": None,
                "ph": "M",
            }
            for node, pid in self.nodes.items()
        ]
        events += [
            {"name": "thread_name", "args": {"name": component}, "pid": pid, "tid": tid, "ph": "M"}
            for (pid, component), tid in self.workers.items()
        ]
        return events


def _common_args(attempt: TaskAttempt) -> dict[str, object]:
    return {
        "task_id": attempt.task_id,
        "job_id": attempt.job_id,
        "attempt_number": attempt.attempt,
        "func_or_class_name": func_or_class_name(attempt),
        "actor_id": id_hex(field(attempt.definition or {}, "actor_id")) or None,
    }


def chrome_trace(index: HistoryIndex, attempts: Iterable[TaskAttempt]) -> list[dict[str, object]]:
    """The trace events (a JSON array once dumped) for ``attempts``."""
    lanes = _Lanes()
    events: list[dict[str, object]] = []
    for attempt in attempts:
        profiling = profiling_data(attempt)
        if profiling and profiling["component_type"] in ("worker", "driver"):
            node_ip = str(profiling["node_ip_address"])
            component = f"{profiling['component_type']}:{profiling['component_id']}"
            pid, tid = lanes.lane(node_ip, component)
            entries = profiling["events"]
            assert isinstance(entries, list)
            for entry in entries:
                extra = dict(entry["extra_data"])
                extra.update(_common_args(attempt))
                name = str(entry["event_name"])
                cname = _COLORS.get(str(extra.get("cname", name)), "generic_work")
                events.append(
                    {
                        "cat": name,
                        "name": str(extra.get("name", name)),
                        "pid": pid,
                        "tid": tid,
                        "ts": entry["start_time"] * 1e3,
                        "dur": (entry["end_time"] - entry["start_time"]) * 1e3,
                        "cname": cname,
                        "args": extra,
                        "ph": "X",
                    }
                )
            continue
        start, end = attempt.start_ns, attempt.end_ns
        if start is None or end is None or not attempt.node_id:
            continue  # never ran, or still running: nothing to draw
        node = index.entity("node", attempt.session, attempt.node_id)
        node_ip = text((node.definition or {}) if node else {}, "node_ip_address")
        pid, tid = lanes.lane(node_ip or attempt.node_id, f"worker:{attempt.worker_id}")
        args = _common_args(attempt)
        args["state"] = attempt.state
        if attempt.error_type:
            args["error_type"] = attempt.error_type
        events.append(
            {
                "cat": "task",
                "name": task_name(attempt),
                "pid": pid,
                "tid": tid,
                "ts": start / 1e3,
                "dur": (end - start) / 1e3,
                "cname": _FAILED_COLOR if attempt.state == "FAILED" else _COLORS["task"],
                "args": args,
                "ph": "X",
            }
        )
    return events + lanes.metadata()


def job_attempts(index: HistoryIndex, session: str | None, job_id: str | None) -> list[TaskAttempt]:
    """Every attempt of a job (of every job when ``job_id`` is None) in the session."""
    equals = [("job_id", job_id)] if job_id else []
    return list(index.candidate_tasks(session, equals))
