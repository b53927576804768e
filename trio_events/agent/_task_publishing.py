"""Ray's two task-event destinations, the GCS and the dashboard head, as service settings.

Each is a :class:`RayEventPublisher` like the HTTP one (same buffer consumer, retry policy and
accounting: delivered, filtered, dropped by reason, abandoned), exposing only the task event
types and encoding batches as ``AddEventsRequest`` with the dropped task attempts its own
:class:`TaskMetadataStore` holds. Ray's names: ``ray_gcs`` and ``dashboard_head``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

from trio_events.agent._dashboard_publisher import DashboardHeadClient, DashboardHeadConfig
from trio_events.agent._gcs_publisher import (
    TASK_EVENT_TYPES,
    AddEventsRequestEncoder,
    GcsPublisherConfig,
    GcsTaskEventsClient,
)
from trio_events.agent._task_metadata import TaskMetadataStore

if TYPE_CHECKING:
    from trio_events._metrics import Metrics
    from trio_events.agent._publisher_config import PublisherConfig
    from trio_events.agent._sink import PublishClient

__all__ = ["TaskEventsDestination", "TaskEventsPublishing"]


def _task_types_only(config: PublisherConfig) -> None:
    if config.exposable_event_types != TASK_EVENT_TYPES:
        raise ValueError(
            f"Publisher {config.name} sends task events only; its exposable_event_types must be "
            "TASK_EVENT_TYPES (Ray does not let them be changed)."
        )


@final
@attrs.frozen
class TaskEventsDestination:
    """The GCS (``GcsPublisherConfig``) or the dashboard head (``DashboardHeadConfig``).

    ``publisher`` is named ``ray_gcs`` or ``dashboard_head`` as in Ray, and must expose exactly
    ``TASK_EVENT_TYPES``.
    """

    client: GcsPublisherConfig | DashboardHeadConfig
    publisher: PublisherConfig

    def __attrs_post_init__(self) -> None:
        _task_types_only(self.publisher)


@final
@attrs.frozen
class TaskEventsPublishing:
    """One built task-event destination: its client, encoder and metadata store."""

    client: PublishClient
    publisher: PublisherConfig
    encoder: AddEventsRequestEncoder
    metadata: TaskMetadataStore

    @classmethod
    def build(cls, destination: TaskEventsDestination, *, metrics: Metrics) -> TaskEventsPublishing:
        config = destination.client
        client: PublishClient = (
            GcsTaskEventsClient(config)
            if isinstance(config, GcsPublisherConfig)
            else DashboardHeadClient(config)
        )
        metadata = TaskMetadataStore(metrics=metrics, consumer=destination.publisher.name)
        return cls(client, destination.publisher, AddEventsRequestEncoder(metadata), metadata)
