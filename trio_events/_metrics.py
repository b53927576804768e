"""Every metric the pipeline records, owned by whoever runs the pipeline and passed in.

Names follow Ray where Ray has one (``ray_`` prefix as Ray's exporter adds it); every other
series of ours is ``trio_events_*``, besides the standard ``process_*`` and ``python_*`` series
of prometheus_client's process, platform and GC collectors. Ray's ``ray_aggregator_agent_*``
series carry Ray's common tags (``ip``, ``pid``, ``SessionName``: whatever ``ray_labels``
holds) so that Ray's Grafana panels select them. There are no module-level singletons: each
:class:`Metrics` has its own registry, so tests and several pipelines in one process never
share counts, and no registry exposes the ``*_created`` series. Read a value with
:meth:`Metrics.value`; every series is listed in ``docs/metrics.md`` (generated from
:meth:`Metrics.documentation`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, final

import attrs
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from trio_events._version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

# Ray's publish-latency buckets (ray-reference.md, section 3.6).
PUBLISH_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
EXPORT_LATENCY_BUCKETS = PUBLISH_LATENCY_BUCKETS
#: Series named after Ray's aggregator agent; they carry Ray's common tags.
RAY_AGENT_PREFIX: Final = "ray_aggregator_agent_"
#: The tags of Ray's common_metric_tags that trio-events can know.
RAY_TAGS: Final = ("ip", "pid", "SessionName")


@final
@attrs.frozen
class SeriesDoc:
    """One documented metric family: its name as scraped, kind, labels and meaning."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str


def _without_created(metric: Metric) -> Metric:
    """``metric`` without its ``*_created`` samples (a second series per counter, unasked for)."""
    kept = Metric(metric.name, metric.documentation, metric.type, metric.unit)
    kept.samples = [s for s in metric.samples if not s.name.endswith("_created")]
    return kept


class _Registry(CollectorRegistry):
    """A registry whose exposition has no ``*_created`` series."""

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            yield _without_created(metric)


class _WithLabels(Collector):
    """The families of ``inner``, each sample with ``labels`` added (Ray's common tags)."""

    def __init__(self, inner: CollectorRegistry, labels: Mapping[str, str]) -> None:
        self._inner = inner
        self._labels = dict(labels)

    def collect(self) -> Iterable[Metric]:
        for metric in self._inner.collect():
            tagged = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            for sample in metric.samples:
                labels = {**self._labels, **sample.labels}
                tagged.add_sample(sample.name, labels, sample.value, sample.timestamp)
            yield tagged


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
    """All counters, gauges and histograms of one pipeline, in one registry.

    ``ray_labels`` are added to every ``ray_aggregator_agent_*`` sample (Ray's ``ip``, ``pid``
    and ``SessionName`` tags; the command line fills them in). A caller's ``registry`` keeps
    whatever it exposes; the default one drops ``*_created`` series.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        ray_labels: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else _Registry(auto_describe=True)
        self.ray_labels: dict[str, str] = dict(ray_labels or {})
        self._docs: list[SeriesDoc] = []
        self._ray = _Registry(auto_describe=True)
        r = self.registry
        # --- the process and the build ---
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = self._gauge(
            "trio_events_build_info", "The running trio-events version (always 1).", ("version",)
        )
        self.build_info.labels(__version__).set(1)
        # --- recorder (producer side) ---
        self.recorder_dropped_events = self._counter(
            "ray_event_recorder_dropped_events",
            "Number of events dropped by the ray event recorder.",
            ("Source", "reason"),
        )
        self.recorder_events_added = self._counter(
            "trio_events_recorder_events_added", "Events accepted by a recorder.", ("Source",)
        )
        self.recorder_events_exported = self._counter(
            "trio_events_recorder_events_exported",
            "Events (before merging) whose export the aggregator acknowledged.",
            ("Source",),
        )
        self.recorder_export_failures = self._counter(
            "trio_events_recorder_export_failures",
            "AddEvents exports that failed, by reason.",
            ("Source", "reason"),
        )
        self.recorder_export_latency = self._histogram(
            "trio_events_recorder_export_latency_seconds",
            "Duration of AddEvents exports.",
            ("Source", "Outcome"),
            EXPORT_LATENCY_BUCKETS,
        )
        self.recorder_buffered_events = self._gauge(
            "trio_events_recorder_buffered_events", "Events waiting in a recorder.", ("Source",)
        )
        # --- aggregator agent ---
        self.events_received = self._counter(
            "ray_aggregator_agent_events_received", "Events received by the aggregator agent."
        )
        self.buffer_add_failures = self._counter(
            "ray_aggregator_agent_events_buffer_add_failures",
            "Events that could not be added to the buffer.",
        )
        self.queue_dropped_events = self._counter(
            "ray_aggregator_agent_queue_dropped_events",
            "Events evicted from the buffer before this consumer read them.",
            ("consumer", "event_type"),
        )
        self.agent_rejected_events = self._counter(
            "trio_events_agent_rejected_events",
            "Events refused with RESOURCE_EXHAUSTED (overflow policy 'reject'); senders keep them.",
        )
        self.agent_discarded_events = self._counter(
            "trio_events_agent_discarded_events",
            "Events accepted but discarded because no publisher is enabled.",
        )
        self.agent_invalid_requests = self._counter(
            "trio_events_agent_invalid_requests",
            "AddEvents requests refused as malformed, oversized or unauthenticated.",
            ("reason",),
        )
        self.spool_cursor_write_failures = self._counter(
            "trio_events_spool_cursor_write_failures",
            "Writes of consumers' cursors to the spool that failed (retried with the next write;"
            " a restart before that re-delivers what the cursors had passed).",
        )
        self.agent_acknowledged_events = self._counter(
            "trio_events_agent_acknowledged_events",
            "Events of AddEvents requests answered OK (buffered, or discarded with no publisher).",
        )
        self.agent_refused_streams = self._counter(
            "trio_events_agent_refused_streams",
            "AddEvents streams refused before their message arrived, by reason "
            "(receive_budget, receive_deadline, client_gone).",
            ("reason",),
        )
        self.store_refused_events = self._counter(
            "trio_events_store_refused_events",
            "Events the local store refused alone (part of published), by reason.",
            ("reason",),
        )
        self.spool_state = self._gauge(
            "trio_events_spool_ok",
            "1 while the spool can keep its promise; 0 when full, unwritable or replaced.",
        )
        self.buffer_size = self._gauge(
            "trio_events_buffer_events", "Events held in the multi-consumer buffer."
        )
        self.buffer_capacity = self._gauge(
            "trio_events_buffer_capacity", "Capacity of the multi-consumer buffer."
        )
        self.buffer_unread = self._gauge(
            "trio_events_buffer_unread_events",
            "Events buffered that this consumer has not read yet.",
            ("consumer",),
        )
        # --- publishers ---
        self.published_events = self._counter(
            "ray_aggregator_agent_published_events",
            "Events published by a publisher.",
            ("consumer",),
        )
        self.filtered_events = self._counter(
            "ray_aggregator_agent_filtered_events",
            "Events not exposed to this publisher's destination.",
            ("consumer",),
        )
        self.publish_failures = self._counter(
            "ray_aggregator_agent_publish_failures",
            "Events of batches that failed for good (permanent error or retries exhausted).",
            ("consumer",),
        )
        self.publish_dropped_events = self._counter(
            "trio_events_publisher_dropped_events",
            "Events a publisher dropped, by reason.",
            ("consumer", "reason"),
        )
        self.publish_latency = self._histogram(
            "ray_aggregator_agent_publish_latency_seconds",
            "Duration of each publish attempt.",
            ("consumer", "Outcome"),
            PUBLISH_LATENCY_BUCKETS,
        )
        self.consecutive_failures = self._gauge(
            "ray_aggregator_agent_consecutive_failures_since_last_success",
            "Failed publish attempts since the last success.",
            ("consumer",),
        )
        self.publish_requests = self._counter(
            "trio_events_publisher_requests",
            "Requests sent to a destination, by outcome (success, retryable, permanent).",
            ("consumer", "outcome"),
        )
        self.publish_sent_bytes = self._counter(
            "trio_events_publisher_sent_bytes",
            "Bytes of request bodies sent to a destination (JSON, before compression).",
            ("consumer",),
        )
        # --- dropped task attempts forwarded by the GCS and dashboard-head publishers ---
        self.task_metadata_attempts = self._counter(
            "trio_events_task_metadata_attempts",
            "Dropped task attempts a task-event publisher received, put in a request, or lost.",
            ("consumer", "outcome"),
        )
        # Ray's own names: one counter per publisher (aggregator_agent_<name>_task_metadata_...).
        self.task_metadata_dropped = {
            name: self._counter(
                f"ray_aggregator_agent_{name}_task_metadata_buffer_dropped_attempts",
                "Dropped task attempts lost because the publisher's metadata buffer was full.",
            )
            for name in ("ray_gcs", "dashboard_head")
        }
        self._callback_gauges = _CallbackGauges()
        since = "ray_aggregator_agent_time_since_last_success_seconds"
        doc = "Seconds since this publisher last published successfully (grows while it fails)."
        self._callback_gauges.declare(since, doc, ("consumer",))
        self._docs.append(SeriesDoc(since, "gauge", (*RAY_TAGS, "consumer"), doc))
        self._ray.register(self._callback_gauges)
        r.register(_WithLabels(self._ray, self.ray_labels))

    # --- declaring -----------------------------------------------------------------------------

    def _registry_for(self, name: str, kind: str, doc: str, labels: tuple[str, ...]) -> Any:
        ray = name.startswith(RAY_AGENT_PREFIX)
        shown = (*RAY_TAGS, *labels) if ray else labels
        self._docs.append(SeriesDoc(name, kind, shown, doc))
        return self._ray if ray else self.registry

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, labels, registry=self._registry_for(name, "counter", doc, labels))

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=self._registry_for(name, "gauge", doc, labels))

    def _histogram(
        self, name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
    ) -> Histogram:
        registry = self._registry_for(name, "histogram", doc, labels)
        return Histogram(name, doc, labels, buckets=buckets, registry=registry)

    def documentation(self) -> tuple[SeriesDoc, ...]:
        """Every family this registry exposes: ours as declared, the runtime's as collected."""
        ours = {d.name for d in self._docs}
        runtime = []
        for family in self.registry.collect():
            if family.name in ours or f"{family.name}_info" in ours:
                continue
            labels = tuple(dict.fromkeys(k for s in family.samples for k in s.labels))
            runtime.append(SeriesDoc(family.name, family.type, labels, family.documentation))
        return (*self._docs, *runtime)

    # --- reading and callbacks -----------------------------------------------------------------

    def track_time_since_last_success(
        self, consumer: str, last_success: Callable[[], float]
    ) -> None:
        """Report ``time.monotonic() - last_success()`` for ``consumer`` whenever scraped."""
        self._callback_gauges.set_function(
            "ray_aggregator_agent_time_since_last_success_seconds",
            (consumer,),
            lambda: max(0.0, time.monotonic() - last_success()),
        )

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The current value of one sample (0.0 when it was never recorded).

        Ray's common tags are added for ``ray_aggregator_agent_*`` names: give only the
        series' own labels.
        """
        wanted = dict(labels or {})
        if name.startswith(RAY_AGENT_PREFIX):
            wanted = {**self.ray_labels, **wanted}
        got = self.registry.get_sample_value(name, wanted)
        return 0.0 if got is None else got
