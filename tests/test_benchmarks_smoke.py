"""The benchmark harness works: its parts in-process and one tiny run (no timing assertions).

The real runs are ``nox -s bench`` (``python benchmarks/run.py``); numbers live in
docs/performance.md, never in tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from benchmarks import micro, run, sink, suite
from benchmarks._harness import Figure, table
from benchmarks.workload import merged_blobs, merged_events, request_pool
from trio_events import pb
from trio_events._http_server import Request
from trio_events.agent._convert import JsonConverter
from trio_events.agent._convert_reference import protobuf_reference_dumps


def test_the_workload_is_merged_realistic_events() -> None:
    events = merged_events(300)
    assert len(events) == 300
    assert {pb.EVENT_TYPE_NAMES[e.event_type] for e in events} >= {
        "TASK_DEFINITION_EVENT",
        "TASK_LIFECYCLE_EVENT",
        "NODE_DEFINITION_EVENT",
    }
    # Merged: a task attempt's partial lifecycle events arrive as one event.
    assert max(len(e.task_lifecycle_event.state_transitions) for e in events) > 1
    types, blobs = merged_blobs(50)
    assert [pb.RayEvent.FromString(b).event_type for b in blobs] == types
    [request] = request_pool(1, 20)
    assert len(pb.AddEventsRequest.FromString(request).events_data.events) == 20


@pytest.mark.parametrize("preserve", [False, True])
def test_the_sink_counts_events_without_parsing(preserve: bool) -> None:
    events = merged_events(200)
    for event in events[:50]:
        event.message = "bench:7"
    bodies = [
        JsonConverter(preserving_proto_field_name=preserve).dumps(events),
        protobuf_reference_dumps(events, preserving_proto_field_name=preserve),  # ", " spacing
    ]
    for body in bodies:
        assert sink.count_events(body) == len(orjson.loads(body)) == 200
        assert [int(i) for i in sink._ID.findall(body)] == [7] * 50


async def test_the_sink_handler_counts_pauses_and_reports() -> None:
    s = sink.Sink(track_ids=True)
    body = JsonConverter().dumps(merged_events(10))
    response = await s.handle(Request("POST", "/events", (), body))
    assert response.status == 200
    assert (s.events, s.posts) == (10, 1)
    assert (await s.handle(Request("POST", "/_pause"))).status == 200
    assert (await s.handle(Request("POST", "/events", (), body))).status == 503
    await s.handle(Request("POST", "/_resume"))
    await s.handle(Request("POST", "/events", (), body))
    stats = json.loads((await s.handle(Request("GET", "/_stats"))).body)
    assert stats["events"] == 20
    assert stats["refused"] == 1
    assert stats["first_ns"] <= stats["last_ns"]
    await s.handle(Request("POST", "/_reset"))
    assert s.events == 0


def test_figures_summarise_runs_against_targets() -> None:
    f = Figure("x", "a figure", "events/s", ">= 100", [90.0, 150.0, 120.0], [1.5, 2.0])
    d = f.as_dict()
    assert (d["median"], d["min"], d["max"]) == (120.0, 90.0, 150.0)
    assert f.meets_target() is True
    assert Figure("y", "latency", "ms", "<= 10", [11.0]).meets_target() is False
    broken = Figure("z", "lossy", "events/s", ">= 1", [5.0], ok=False)
    assert broken.meets_target() is False
    assert Figure("w", "none", "s", "< 1").meets_target() is None
    text = table([f, broken])
    assert "| a figure | 120 | 90 | 150 | events/s | >= 100 | yes | 3 | 1.5-2.0 |" in text
    assert "**no**" in text


def test_weighted_percentile() -> None:
    pairs = [(10.0, 1), (20.0, 98), (500.0, 1)]
    assert suite._percentile(pairs, 0.5) == 20.0
    assert suite._percentile(pairs, 0.99) == 20.0
    assert suite._percentile(pairs, 1.0) == 500.0


def test_micro_figures_in_process() -> None:
    converter = micro.converter(40, 1, batch=16)
    assert set(converter) == {"ours", "ours_serialized", "protobuf", "ratio", "ratio_serialized"}
    assert all(len(values) == 1 and values[0] > 0 for values in converter.values())
    recorder = micro.recorder_figures(200, 1)
    assert recorder["add"][0] > 0
    assert recorder["export"][0] > 0
    assert 0 < recorder["merged_per_export"][0] < 10_000


def test_quick_run_writes_the_report(tmp_path: Path) -> None:
    # One real child process (the converter figure, 300 events): proves run.py end to end.
    assert run.main(["--quick", "--only", "converter", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    names = [f["name"] for f in report["figures"]]
    assert names[0] == "converter_ratio"
    assert report["figures"][0]["median"] > 0
    assert report["machine"]["nproc"] >= 1
    markdown = (tmp_path / "report.md").read_text()
    assert "| converter: ours vs protobuf MessageToJson path" in markdown


def test_the_plot_of_publish_throughput(tmp_path: Path) -> None:
    sweep = {
        converter: [
            {"batch_size": size, "events_per_s": rate * size / (size + 50)}
            for size in (100, 1000, 5000)
        ]
        for converter, rate in (("compiled", 80_000.0), ("protobuf", 9_000.0))
    }
    assert run.plot({"publish": {"sweep": sweep}}, tmp_path) == ["publish_vs_batch_size.png"]
    assert (tmp_path / "publish_vs_batch_size.png").stat().st_size > 1000
    assert run.plot({}, tmp_path) == []


async def test_the_sink_answers_after_its_latency(autojump_clock) -> None:
    import trio

    s = sink.Sink(latency=0.04)
    body = JsonConverter().dumps(merged_events(5))
    start = trio.current_time()
    response = await s.handle(Request("POST", "/events", (), body))
    assert response.status == 200
    assert trio.current_time() - start == pytest.approx(0.04)
    await s.handle(Request("GET", "/_stats"))  # control requests are not delayed
    assert trio.current_time() - start == pytest.approx(0.04)


def test_the_plain_receiver_counts_posts_sent_by_a_real_client() -> None:
    import threading
    import urllib.request
    from http.server import ThreadingHTTPServer

    from benchmarks import plain_receiver

    plain_receiver._reset()
    server = ThreadingHTTPServer(("127.0.0.1", 0), plain_receiver.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        body = JsonConverter().dumps(merged_events(30))
        request = urllib.request.Request(f"{base}/events", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"status": "ok"}
        with urllib.request.urlopen(f"{base}/_stats", timeout=10) as response:
            stats = json.loads(response.read())
        assert (stats["events"], stats["posts"], stats["bytes"]) == (30, 1, len(body))
    finally:
        server.shutdown()
        server.server_close()


def test_tree_cpu_counts_this_process() -> None:
    import os
    import time

    from benchmarks.peer import tree_cpu

    before = tree_cpu(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert tree_cpu(os.getpid()) >= before + 0.03
    assert tree_cpu(2**22 + 12345) == 0.0  # no such process


def test_the_handoff_figure_in_process() -> None:
    handoff = micro.handoff(40, 1, batch=20)
    assert set(handoff) == {
        "convert_ms",
        "handoff_ms",
        "handoff_cpu_ms",
        "worker_ms",
        "worker_cpu_ms",
        "handoff_share",
    }
    assert all(len(values) == 1 and values[0] >= 0 for values in handoff.values())
    assert handoff["worker_ms"][0] > 0


def test_the_plots_against_workers_and_requests_in_flight(tmp_path: Path) -> None:
    from benchmarks.peer import plots

    def runs(rate: float) -> list[dict[str, float]]:
        return [{"events_per_s": rate}, {"events_per_s": rate * 1.1}]

    sweep: dict[str, dict[str, list[dict[str, float]]]] = {
        "workers": {"1": runs(40_000), "2": runs(70_000)},
        "in_flight": {},
    }
    details: dict[str, object] = {
        "workers": sweep,
        "peer": {"runs": [{"agent": "ray", "receiver": "instant", "events_per_s": 5_000.0}]},
    }
    assert plots(details, tmp_path) == ["throughput_vs_workers.png"]
    sweep["in_flight"] = {"1": runs(20_000), "4": runs(60_000)}
    assert plots(details, tmp_path) == ["throughput_vs_workers.png", "throughput_vs_flight.png"]
    assert (tmp_path / "throughput_vs_flight.png").stat().st_size > 1000
    assert plots({}, tmp_path) == []


def test_the_ingest_figure_in_process() -> None:
    ingest = micro.ingest(2_000, 1)
    assert set(ingest) == {"sliced_us", "reserialized_us", "frame_repr_us", "hyperframe_repr_us"}
    assert all(len(values) == 1 and values[0] > 0 for values in ingest.values())
