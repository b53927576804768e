"""Every metric the pipeline records, owned by whoever runs the pipeline and passed in.

Names follow Ray where Ray has one (``ray_`` prefix as Ray's exporter adds it); ours are
``trio_events_*``. There are no module-level singletons: each :class:`Metrics` has its own
``prometheus_client.CollectorRegistry``, so tests and several pipelines in one process never
share counts. Read a value with :meth:`Metrics.value`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

# Ray's publish-latency buckets (ray-reference.md, section 3.6).
PUBLISH_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
EXPORT_LATENCY_BUCKETS = PUBLISH_LATENCY_BUCKETS


class _CallbackGauges(Collector):
    """Gauges computed when scraped (e.g. time since last success, which must actually grow)."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._callbacks: dict[str, dict[tuple[str, ...], Callable[[], float]]] = {}

    def declare(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self._families[name] = (documentation, labelnames)
        self._callbacks[name] = {}

    def set_function(self, name: str, labels: tuple[str, ...], fn: Callable[[], float]) -> None:
        self._callbacks[name][labels] = fn

    def remove(self, name: str, labels: tuple[str, ...]) -> None:
        self._callbacks[name].pop(labels, None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, (doc, labelnames) in self._families.items():
            family = GaugeMetricFamily(name, doc, labels=list(labelnames))
            for labels, fn in self._callbacks[name].items():
                family.add_metric(list(labels), fn())
            yield family


@final
class Metrics:
    """All counters, gauges and histograms of one pipeline, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        # --- recorder (producer side) ---
        self.recorder_dropped_events = Counter(
            "ray_event_recorder_dropped_events",
            "Number of events dropped by the ray event recorder.",
            ["Source", "reason"],
            registry=r,
        )
        self.recorder_events_added = Counter(
            "trio_events_recorder_events_added",
            "Events accepted by a recorder.",
            ["Source"],
            registry=r,
        )
        self.recorder_events_exported = Counter(
            "trio_events_recorder_events_exported",
            "Events (before merging) whose export the aggregator acknowledged.",
            ["Source"],
            registry=r,
        )
        self.recorder_export_failures = Counter(
            "trio_events_recorder_export_failures",
            "AddEvents exports that failed, by reason.",
            ["Source", "reason"],
            registry=r,
        )
        self.recorder_export_latency = Histogram(
            "trio_events_recorder_export_latency_seconds",
            "Duration of AddEvents exports.",
            ["Source", "Outcome"],
            buckets=EXPORT_LATENCY_BUCKETS,
            registry=r,
        )
        self.recorder_buffered_events = Gauge(
            "trio_events_recorder_buffered_events",
            "Events waiting in a recorder.",
            ["Source"],
            registry=r,
        )
        # --- aggregator agent ---
        self.events_received = Counter(
            "ray_aggregator_agent_events_received",
            "Events received by the aggregator agent.",
            registry=r,
        )
        self.buffer_add_failures = Counter(
            "ray_aggregator_agent_events_buffer_add_failures",
            "Events that could not be added to the buffer.",
            registry=r,
        )
        self.queue_dropped_events = Counter(
            "ray_aggregator_agent_queue_dropped_events",
            "Events evicted from the buffer before this consumer read them.",
            ["consumer", "event_type"],
            registry=r,
        )
        self.agent_rejected_events = Counter(
            "trio_events_agent_rejected_events",
            "Events refused with RESOURCE_EXHAUSTED (overflow policy 'reject'); senders keep them.",
            registry=r,
        )
        self.agent_discarded_events = Counter(
            "trio_events_agent_discarded_events",
            "Events accepted but discarded because no publisher is enabled.",
            registry=r,
        )
        self.agent_invalid_requests = Counter(
            "trio_events_agent_invalid_requests",
            "AddEvents requests refused as malformed, oversized or unauthenticated.",
            ["reason"],
            registry=r,
        )
        self.buffer_size = Gauge(
            "trio_events_buffer_events", "Events held in the multi-consumer buffer.", registry=r
        )
        self.buffer_capacity = Gauge(
            "trio_events_buffer_capacity", "Capacity of the multi-consumer buffer.", registry=r
        )
        self.buffer_unread = Gauge(
            "trio_events_buffer_unread_events",
            "Events buffered that this consumer has not read yet.",
            ["consumer"],
            registry=r,
        )
        # --- publishers ---
        self.published_events = Counter(
            "ray_aggregator_agent_published_events",
            "Events published by a publisher.",
            ["consumer"],
            registry=r,
        )
        self.filtered_events = Counter(
            "ray_aggregator_agent_filtered_events",
            "Events not exposed to this publisher's destination.",
            ["consumer"],
            registry=r,
        )
        self.publish_failures = Counter(
            "ray_aggregator_agent_publish_failures",
            "Events of batches that failed for good (permanent error or retries exhausted).",
            ["consumer"],
            registry=r,
        )
        self.publish_dropped_events = Counter(
            "trio_events_publisher_dropped_events",
            "Events a publisher dropped, by reason.",
            ["consumer", "reason"],
            registry=r,
        )
        self.publish_latency = Histogram(
            "ray_aggregator_agent_publish_latency_seconds",
            "Duration of each publish attempt.",
            ["consumer", "Outcome"],
            buckets=PUBLISH_LATENCY_BUCKETS,
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "ray_aggregator_agent_consecutive_failures_since_last_success",
            "Failed publish attempts since the last success.",
            ["consumer"],
            registry=r,
        )
        # --- dropped task attempts forwarded by the GCS and dashboard-head publishers ---
        self.task_metadata_attempts = Counter(
            "trio_events_task_metadata_attempts",
            "Dropped task attempts a task-event publisher received, put in a request, or lost.",
            ["consumer", "outcome"],
            registry=r,
        )
        # Ray's own names: one counter per publisher (aggregator_agent_<name>_task_metadata_...).
        self.task_metadata_dropped = {
            name: Counter(
                f"ray_aggregator_agent_{name}_task_metadata_buffer_dropped_attempts",
                "Dropped task attempts lost because the publisher's metadata buffer was full.",
                registry=r,
            )
            for name in ("ray_gcs", "dashboard_head")
        }
        self._callback_gauges = _CallbackGauges()
        self._callback_gauges.declare(
            "ray_aggregator_agent_time_since_last_success_seconds",
            "Seconds since this publisher last published successfully (grows while it fails).",
            ("consumer",),
        )
        r.register(self._callback_gauges)

    def track_time_since_last_success(
        self, consumer: str, last_success: Callable[[], float]
    ) -> None:
        """Report ``time.monotonic() - last_success()`` for ``consumer`` whenever scraped."""
        self._callback_gauges.set_function(
            "ray_aggregator_agent_time_since_last_success_seconds",
            (consumer,),
            lambda: max(0.0, time.monotonic() - last_success()),
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample (0.0 when it was never recorded)."""
        got = self.registry.get_sample_value(name, labels or {})
        return 0.0 if got is None else got
