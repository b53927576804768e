"""What :class:`~trio_events.agent.AgentService` is given and what it reports.

``ServiceConfig`` (with its ``Destination`` entries) is the frozen configuration the command line
builds and a library user passes in; ``ServiceAddresses`` is what ``run()`` hands to
``started()``; ``ShutdownSummary`` counts every event once the service has stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, final

import attrs

from trio_events.agent._ingest import AgentConfig
from trio_events.agent._publisher_config import PublisherConfig, PublisherStatistics

if TYPE_CHECKING:
    from trio_events.agent._http_sink import HttpPublisherConfig
    from trio_events.agent._spool_db import SpoolConfig
    from trio_events.agent._task_publishing import TaskEventsDestination

STORE_CONSUMER: Final = "local_store"
#: Where ``trio-events agent`` serves /metrics and /healthz unless told otherwise (``off``
#: serves nothing). A library ``ServiceConfig`` serves no metrics unless given an address.
DEFAULT_METRICS_LISTEN: Final = ("127.0.0.1", 9478)


@final
@attrs.frozen
class Destination:
    """One HTTP export address with its publisher settings (``publisher.name`` must be unique).

    The publisher's ``attempt_timeout`` is the HTTP client's ``timeout``, always: it is set
    here from ``http.timeout``, so the two can never disagree.
    """

    http: HttpPublisherConfig
    publisher: PublisherConfig = attrs.field(factory=PublisherConfig)

    def __attrs_post_init__(self) -> None:
        if self.publisher.attempt_timeout != self.http.timeout:
            publisher = attrs.evolve(self.publisher, attempt_timeout=self.http.timeout)
            object.__setattr__(self, "publisher", publisher)  # frozen: only while constructing


@final
@attrs.frozen
class ServiceConfig:
    """Everything ``trio-events agent`` runs. With no destinations, ``store_path`` keeps events.

    With ``spool`` the buffer is durable (docs/spool.md) and bounded by the spool's
    ``max_events`` and ``max_bytes`` instead of ``agent.buffer_size``. ``task_destinations``
    are Ray's GCS and dashboard-head publishers (task events and dropped task attempts).
    """

    agent: AgentConfig = attrs.field(factory=AgentConfig)
    destinations: tuple[Destination, ...] = ()
    task_destinations: tuple[TaskEventsDestination, ...] = ()
    store_path: str | None = None
    #: The local store keeps every event type unless told otherwise: it is for looking at
    #: what arrived (Ray's HTTP default list would hide profile, placement-group and
    #: submission-job events).
    store_publisher: PublisherConfig = attrs.field(
        factory=lambda: PublisherConfig(
            name=STORE_CONSUMER, exposable_event_types=None, max_in_flight=1
        )
    )
    metrics_listen: tuple[str, int] | None = None
    grace_period: float = 10.0
    unhealthy_after: float = 60.0
    spool: SpoolConfig | None = None
    #: processes converting events to JSON (docs/performance.md); 1 converts in the agent's own
    conversion_workers: int = 1

    def __attrs_post_init__(self) -> None:
        names = [d.publisher.name for d in self.destinations]
        names += [d.publisher.name for d in self.task_destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"Each destination needs its own publisher name; got {names}.")
        if self.spool is not None and self.spool.path == self.store_path:
            raise ValueError(
                f"The spool and the local store need different files; both are {self.store_path!r}."
            )
        if isinstance(self.conversion_workers, bool) or self.conversion_workers < 1:
            raise ValueError(
                f"conversion_workers must be an integer >= 1, got {self.conversion_workers!r}."
            )
        if self.grace_period < 0 or self.unhealthy_after < 0:
            raise ValueError("grace_period and unhealthy_after must be >= 0 seconds.")


@final
@attrs.frozen
class ServiceAddresses:
    """What :meth:`AgentService.run` reports to ``task_status.started()``."""

    grpc_port: int
    metrics_port: int | None
    store_path: str | None
    spool_resumed: int | None = None  #: events found in the spool at start (None: no spool)


@final
@attrs.frozen
class ShutdownSummary:
    delivered: int
    dropped: int
    abandoned: int
    publishers: tuple[PublisherStatistics, ...]
    retained: int = 0  #: left in the spool for the next start

    def line(self) -> str:
        line = f"delivered={self.delivered} dropped={self.dropped} abandoned={self.abandoned}"
        return f"{line} retained={self.retained}" if self.retained else line


def summary_of(results: list[PublisherStatistics]) -> ShutdownSummary:
    return ShutdownSummary(
        delivered=sum(s.delivered for s in results),
        dropped=sum(s.dropped for s in results),
        abandoned=sum(s.abandoned for s in results),
        publishers=tuple(results),
        retained=sum(s.retained for s in results),
    )
