"""The metrics registry: Ray's tags, one prefix, runtime series, no _created, every series documented."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import orjson
import trio
from prometheus_client import generate_latest

from tests.test_service import Sink, _config
from trio_events._cli._docs import metrics_markdown
from trio_events._http_server import serve_http
from trio_events._metrics import Metrics
from trio_events._version import __version__
from trio_events.agent._http_sink import HttpPublisherClient, HttpPublisherConfig
from trio_events.agent._service import AgentService, _Counted
from trio_events.producer._recorder import RecorderConfig, open_recorder

ROOT = Path(__file__).resolve().parent.parent
TAGS = {"ip": "10.0.0.7", "pid": "4242", "SessionName": "session_2026_x"}


def _families(text: str) -> dict[str, str]:
    """``{family: type}`` of a text exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def test_ray_series_carry_ray_tags_and_ours_one_prefix() -> None:
    metrics = Metrics(ray_labels=TAGS)
    metrics.published_events.labels("http_service").inc(5)
    metrics.events_received.inc(7)
    metrics.agent_rejected_events.inc(1)
    text = generate_latest(metrics.registry).decode()
    assert (
        'ray_aggregator_agent_published_events_total{SessionName="session_2026_x",'
        'consumer="http_service",ip="10.0.0.7",pid="4242"} 5.0'
    ) in text
    assert 'ray_aggregator_agent_events_received_total{SessionName="session_2026_x",' in text
    assert "trio_events_agent_rejected_events_total 1.0" in text  # ours: no Ray tags
    assert (
        metrics.value("ray_aggregator_agent_published_events_total", {"consumer": "http_service"})
        == 5
    )
    for family in _families(text):
        assert family.startswith(("ray_", "trio_events_", "process_", "python_")), family


def test_no_created_series_and_runtime_series_present() -> None:
    metrics = Metrics()
    metrics.published_events.labels("x").inc()
    metrics.publish_latency.labels("x", "success").observe(0.1)
    text = generate_latest(metrics.registry).decode()
    assert "_created" not in text
    assert f'trio_events_build_info{{version="{__version__}"}} 1.0' in text
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert f"\n{name}" in text, name
    assert "python_gc_objects_collected_total" in text


def test_every_series_is_documented() -> None:
    """docs/metrics.md is `python -m trio_events._cli._docs` output and lists every family."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert doc == metrics_markdown()
    metrics = Metrics(ray_labels=TAGS)
    for family in metrics.registry.collect():
        assert f"| `{family.name}` |" in doc, family.name
    for series in metrics.documentation():
        assert series.help, series.name
        if series.name.startswith("ray_aggregator_agent_"):
            assert series.labels[:3] == ("ip", "pid", "SessionName")


async def test_requests_and_bytes_are_counted_per_destination() -> None:
    answers = iter([503, 200, 400])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers))

    metrics = Metrics()
    client = HttpPublisherClient(
        HttpPublisherConfig(url="http://127.0.0.1:9/"), transport=httpx.MockTransport(handler)
    )
    counted = _Counted(client, "history", metrics)
    for _ in range(3):
        await counted.publish(b"[1,2,3]")
    await counted.aclose()
    value = metrics.value
    assert (
        value("trio_events_publisher_requests_total", {"consumer": "history", "outcome": "success"})
        == 1
    )
    assert (
        value(
            "trio_events_publisher_requests_total", {"consumer": "history", "outcome": "retryable"}
        )
        == 1
    )
    assert (
        value(
            "trio_events_publisher_requests_total", {"consumer": "history", "outcome": "permanent"}
        )
        == 1
    )
    assert value("trio_events_publisher_sent_bytes_total", {"consumer": "history"}) == 21


async def test_the_agent_serves_tagged_metrics_and_health(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        sink = Sink()
        sink_port = await nursery.start(serve_http, sink.handle, "127.0.0.1", 0)
        service = AgentService(_config(sink_port), metrics=Metrics(ray_labels=TAGS))
        addresses = await nursery.start(service.run)
        config = RecorderConfig(report_interval=0.05)
        target = f"127.0.0.1:{addresses.grpc_port}"
        async with open_recorder(config, target=target, node_id=b"n" * 28) as recorder:
            from trio_events._cli._workload import realistic_events

            recorder.add_many(list(realistic_events("lifecycle", 20, seed=3)))
        while not sink.events:  # noqa: ASYNC110 - polling a real HTTP sink
            await trio.sleep(0.05)
        base = f"http://127.0.0.1:{addresses.metrics_port}"
        async with httpx.AsyncClient(trust_env=False) as client:
            text = (await client.get(f"{base}/metrics")).text
            health = orjson.loads((await client.get(f"{base}/healthz")).content)
        service.request_stop()
    assert "_created" not in text
    assert re.search(
        r'^ray_aggregator_agent_published_events_total\{SessionName="session_2026_x",'
        r'consumer="http_service",ip="10.0.0.7",pid="4242"\} [1-9]',
        text,
        re.MULTILINE,
    )
    assert re.search(
        r'^trio_events_publisher_sent_bytes_total\{consumer="http_service"\} [1-9]',
        text,
        re.MULTILINE,
    )
    assert health["status"] == "healthy"


def test_the_health_check_reads_tagged_series() -> None:
    """/healthz reads time-since-last-success back by its own labels; Ray's tags must not hide it."""
    import time

    metrics = Metrics(ray_labels=TAGS)
    metrics.track_time_since_last_success("http_service", lambda: time.monotonic() - 90.0)
    name = "ray_aggregator_agent_time_since_last_success_seconds"
    assert metrics.value(name, {"consumer": "http_service"}) > 89.0
