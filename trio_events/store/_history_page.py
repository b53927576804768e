"""The history web page: server-rendered HTML, no JavaScript, no build step, nothing fetched
from elsewhere (it works offline), styled by ``static/history.css``.

- ``/``: every session in the store with its jobs, and the most recent failures with their errors.
- ``/session/<name>/``: a session's jobs, nodes and actors with their state histories.
- ``/session/<name>/job/<job id>?state=&name=&node=``: a job's task table with filters, a Gantt
  timeline of task attempts by node and worker, and its failures with their error messages.
"""

from __future__ import annotations

import datetime
import html
import urllib.parse
from typing import TYPE_CHECKING, Final

from trio_events.store._history_index import HistoryIndex, task_name
from trio_events.store._history_rows import job_rows
from trio_events.store._ray_json import child, field, id_hex, text

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from trio_events.store._history_state import Entity, TaskAttempt

TABLE_ROWS: Final = 100
GANTT_ATTEMPTS: Final = 300
FAILURES: Final = 50
FAILURES_UNFILTERED: Final = 5
_STATE_CLASS: Final = {
    "FINISHED": "ok",
    "FAILED": "bad",
    "RUNNING": "run",
    "DEAD": "bad",
    "ALIVE": "ok",
}


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _when(ns: int | None) -> str:
    if not ns:
        return ""
    moment = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _duration(ns: int | None) -> str:
    if ns is None:
        return ""
    seconds = ns / 1e9
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _short(identifier: str, width: int = 12) -> str:
    return identifier if len(identifier) <= width else identifier[:width] + "…"


def _last_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _state(state: str, reconciled: str = "") -> str:
    css = _STATE_CLASS.get(state, "mid")
    title = f' title="{_e(reconciled)}"' if reconciled else ""
    mark = "*" if reconciled else ""
    return f'<span class="state {css}"{title}>{_e(state)}{mark}</span>'


def _page(title: str, body: str, crumbs: Sequence[tuple[str, str]] = ()) -> str:
    nav = " &rsaquo; ".join(f'<a href="{_e(href)}">{_e(label)}</a>' for href, label in crumbs)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title>"
        '<link rel="stylesheet" href="/static/history.css"></head><body>'
        f'<header><a class="home" href="/">trio-events history</a> {nav}</header>'
        f"<main><h1>{_e(title)}</h1>{body}</main></body></html>\n"
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _session_href(session: str) -> str:
    return f"/session/{urllib.parse.quote(session, safe='')}/"


def _job_href(session: str, job_id: str, **query: str) -> str:
    href = _session_href(session) + f"job/{urllib.parse.quote(job_id, safe='')}"
    wanted = {k: v for k, v in query.items() if v}
    return href + ("?" + urllib.parse.urlencode(wanted) if wanted else "")


def _attempt_duration(attempt: TaskAttempt) -> int | None:
    begin = attempt.start_ns or attempt.creation_ns
    end = attempt.end_ns
    return None if begin is None or end is None else max(end - begin, 0)


def _failure(attempt: TaskAttempt, with_job: bool, *, open_: bool = False) -> str:
    where = f"job {_e(attempt.job_id)} · " if with_job else ""
    reconciled = ' <span class="note">(reconciled: the events never said it ended)</span>'
    return (
        '<div class="failure">'
        f"<div><b>{_e(task_name(attempt))}</b> attempt {attempt.attempt} · "
        f"{where}<code>{_e(attempt.task_id)}</code> · {_e(_when(attempt.end_ns))} · "
        f"node <code>{_e(_short(attempt.node_id))}</code>"
        f"{reconciled if attempt.reconciled else ''}</div>"
        f'<div class="error-type">{_e(attempt.error_type)}: '
        f"{_e(_last_line(attempt.error_message))}</div>"
        f"<details{' open' if open_ else ''}><summary>error message</summary>"
        f'<pre class="error">{_e(attempt.error_message)}</pre></details>'
        "</div>"
    )


def render_home(index: HistoryIndex) -> str:
    rows = []
    for s in index.sessions:
        jobs = " ".join(f'<a href="{_e(_job_href(s.name, j))}">{_e(j)}</a>' for j in s.jobs[:20])
        rows.append(
            (
                f'<a href="{_e(_session_href(s.name))}">{_e(s.name or "(no session name)")}</a>',
                _e(_when(s.first_ns)),
                _e(_when(s.last_ns)),
                f"{s.events:,}",
                str(s.nodes),
                jobs,
                f"{s.tasks:,}",
                f'<span class="{"bad" if s.failed_tasks else ""}">{s.failed_tasks:,}</span>',
            )
        )
    headers = [
        "session",
        "first event",
        "last event",
        "events",
        "nodes",
        "jobs",
        "task attempts",
        "failed",
    ]
    sessions = _table(headers, rows, "sessions") if rows else "<p>The store has no events yet.</p>"
    failures = index.failures(None)[:FAILURES_UNFILTERED]
    recent = (
        "".join(_failure(a, True, open_=i == 0) for i, a in enumerate(failures))
        or "<p>No failed tasks.</p>"
    )
    body = (
        f'<p class="meta">{index.history.events:,} events from <code>{_e(index.path)}</code>; '
        f"state rebuilt from partial events (see docs/history.md).</p>"
        f"<h2>Sessions</h2>{sessions}<h2>Recent failures</h2>{recent}"
    )
    return _page("Ray sessions", body)


def _history_cells(entity: Entity) -> str:
    steps = [f"{_state(t.state)} <small>{_e(_when(t.ts_ns))}</small>" for t in entity.history()]
    if entity.reconciled is not None:
        state, when, reason = entity.reconciled
        steps.append(f"{_state(state, reason)} <small>{_e(_when(when))} (reconciled)</small>")
    return " → ".join(steps)


def render_session(index: HistoryIndex, session: str) -> str:
    jobs = []
    for row in job_rows(index, session):
        job_id = str(row["job_id"] or row["submission_id"] or "")
        link = (
            f'<a href="{_e(_job_href(session, job_id))}">{_e(job_id)}</a>'
            if row["job_id"]
            else _e(job_id)
        )
        jobs.append((link, _e(row["type"]), _state(str(row["status"])), _e(row["entrypoint"])))
    nodes = []
    for node in index.entities("node", session):
        d = node.definition or {}
        label = text(d, "node_name") or text(d, "hostname")
        nodes.append(
            (
                f"<code>{_e(_short(node.entity_id))}</code>",
                _e(text(d, "node_ip_address")),
                _e(label),
                _history_cells(node),
            )
        )
    actors = []
    for actor in index.entities("actor", session):
        d = actor.definition or {}
        actors.append(
            (
                f"<code>{_e(_short(actor.entity_id))}</code>",
                _e(text(d, "class_name")),
                _e(text(d, "name")),
                _e(id_hex(field(d, "job_id"))),
                _history_cells(actor),
            )
        )
    dead_workers = []
    for worker in index.entities("worker", session):
        for t in worker.history():
            if t.state == "DEAD":
                death = child(t.details, "death_info") or {}
                dead_workers.append(
                    (
                        f"<code>{_e(_short(worker.entity_id))}</code>",
                        _e(_when(t.ts_ns)),
                        _e(text(death, "exit_type")),
                        _e(text(death, "exit_detail")),
                    )
                )
    body = (
        "<h2>Jobs</h2>"
        + _table(["job", "type", "status", "entrypoint"], jobs)
        + "<h2>Nodes</h2>"
        + _table(["node", "ip", "name", "state history"], nodes)
        + "<h2>Actors</h2>"
        + _table(["actor", "class", "name", "job", "state history"], actors)
        + "<h2>Workers that died</h2>"
        + (
            _table(["worker", "died", "exit type", "detail"], dead_workers)
            if dead_workers
            else "<p>None.</p>"
        )
    )
    return _page(f"Session {session}", body, [(_session_href(session), session)])


def _gantt(index: HistoryIndex, attempts: Sequence[TaskAttempt]) -> str:
    ran = [a for a in attempts if a.start_ns is not None and a.node_id]
    ran.sort(key=lambda a: a.start_ns or 0)
    ran = ran[-GANTT_ATTEMPTS:]
    if not ran:
        return "<p>No attempt of these tasks ran.</p>"
    t0 = min(a.start_ns or 0 for a in ran)
    t1 = max(a.end_ns or a.start_ns or 0 for a in ran)
    span = max(t1 - t0, 1)
    lanes: dict[str, dict[str, list[TaskAttempt]]] = {}
    for a in ran:
        lanes.setdefault(a.node_id, {}).setdefault(a.worker_id, []).append(a)
    out = [
        f'<p class="meta">{len(ran)} attempts from {_e(_when(t0))} over '
        f'{_e(_duration(span))}.</p><div class="gantt">'
    ]
    for node_id, workers in sorted(lanes.items()):
        node = index.entity("node", ran[0].session, node_id)
        ip = text((node.definition or {}) if node else {}, "node_ip_address")
        out.append(f'<div class="node">node {_e(_short(node_id))} {_e(ip)}</div>')
        for worker_id, items in sorted(workers.items()):
            bars = []
            for a in items:
                left = ((a.start_ns or t0) - t0) / span * 100
                width = max(((a.end_ns or t1) - (a.start_ns or t0)) / span * 100, 0.15)
                took = _duration(_attempt_duration(a))
                tip = f"{task_name(a)} attempt {a.attempt} {a.state} {took}"
                css = _STATE_CLASS.get(a.state, "mid")
                bars.append(
                    f'<span class="bar {css}" style="left:{left:.3f}%;width:{width:.3f}%" '
                    f'title="{_e(tip)}"></span>'
                )
            out.append(
                f'<div class="lane"><span class="who">worker {_e(_short(worker_id, 8))}</span>'
                f'<div class="track">{"".join(bars)}</div></div>'
            )
    out.append("</div>")
    return "".join(out)


def _job_state_pool(
    index: HistoryIndex, session: str, job_id: str, state: str
) -> list[TaskAttempt]:
    """A job's attempts in one state, newest first (kept until the history is next folded)."""
    key = ("job-state", session, job_id, state)
    found = index.memo.get(key)
    if not isinstance(found, list):
        narrowed = index.candidate_tasks(session, [("job_id", job_id), ("state", state)])
        found = [a for a in narrowed if a.job_id == job_id and a.state == state]
        found.sort(key=lambda a: a.creation_ns or 0, reverse=True)
        index.remember(key, found)
    return found


def render_job(index: HistoryIndex, session: str, job_id: str, query: str) -> str:
    params = dict(urllib.parse.parse_qsl(query))
    want_state, want_name, want_node = (
        params.get(k, "").strip() for k in ("state", "name", "node")
    )
    view = index.job_view(session, job_id)  # computed once per refresh of the history
    counts, nodes, total = view.state_counts, view.nodes, len(view.newest_first)

    def wanted(a: TaskAttempt) -> bool:
        return (not want_name or want_name.lower() in task_name(a).lower()) and (
            not want_node or a.node_id == want_node
        )

    # With a state, that state's index is narrower than the job's attempts.
    pool = _job_state_pool(index, session, job_id, want_state) if want_state else view.newest_first
    chosen = [a for a in pool if wanted(a)] if want_name or want_node else pool
    options = "".join(
        f'<option value="{_e(s)}"{" selected" if s == want_state else ""}>{_e(s)} ({n:,})</option>'
        for s, n in sorted(counts.items())
    )
    node_options = "".join(
        f'<option value="{_e(n)}"{" selected" if n == want_node else ""}>{_e(_short(n))}</option>'
        for n in nodes
        if n
    )
    form = (
        f'<form class="filters" method="get" action="{_e(_job_href(session, job_id))}">'
        f'<label>state <select name="state"><option value="">any ({total:,})</option>'
        f"{options}</select></label> "
        f'<label>name <input name="name" value="{_e(want_name)}" placeholder="contains"></label> '
        '<label>node <select name="node"><option value="">any</option>'
        f"{node_options}</select></label> "
        '<button type="submit">filter</button></form>'
    )
    rows = [
        (
            _state(a.state, a.reconciled),
            _e(task_name(a)),
            str(a.attempt),
            f"<code>{_e(_short(a.task_id, 16))}</code>",
            _e(_when(a.creation_ns)),
            _e(_duration(_attempt_duration(a))),
            f"<code>{_e(_short(a.node_id))}</code>",
            f'<span class="err">{_e(a.error_type)} {_e(_last_line(a.error_message))}</span>',
        )
        for a in chosen[:TABLE_ROWS]
    ]
    shown = f"{min(len(chosen), TABLE_ROWS):,} of {len(chosen):,} matching attempts (newest first)"
    if want_state and want_state != "FAILED":
        failed = []
    else:  # failures(), most recent end first, is kept until the history is next folded
        failed = [a for a in index.failures(session) if a.job_id == job_id and wanted(a)]
    shown_failures = FAILURES if want_state == "FAILED" else FAILURES_UNFILTERED
    failures = "".join(
        _failure(a, False, open_=i == 0) for i, a in enumerate(failed[:shown_failures])
    )
    if len(failed) > shown_failures:
        more = _job_href(session, job_id, state="FAILED", name=want_name, node=want_node)
        failures += f'<p class="meta"><a href="{_e(more)}">all {len(failed):,} failures</a></p>'
    body = (
        f'<p class="meta"><a href="{_e(_session_href(session))}api/v0/tasks/timeline'
        f'?job_id={_e(job_id)}">'
        "Chrome trace (open in Perfetto or chrome://tracing)</a></p>"
        f"{form}<h2>Timeline</h2>{_gantt(index, chosen[: GANTT_ATTEMPTS * 2])}"
        f"<h2>Failures ({len(failed):,})</h2>{failures or '<p>No failures.</p>'}"
        f'<h2>Tasks</h2><p class="meta">{shown}; * = settled by reconciliation.</p>'
        + _table(
            ["state", "name", "attempt", "task id", "created", "duration", "node", "error"],
            rows,
            "tasks",
        )
    )
    crumbs = [(_session_href(session), session), (_job_href(session, job_id), f"job {job_id}")]
    return _page(f"Job {job_id}", body, crumbs)
