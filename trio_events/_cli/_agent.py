"""``trio-events agent``: flags (defaults from Ray's environment variables) to a running service."""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
from argparse import SUPPRESS
from typing import TYPE_CHECKING

import trio

from trio_events._cli._settings import (
    AGENT_SETTINGS,
    PUBLISHER_SETTINGS,
    TASK_PUBLISHER_SETTINGS,
    add_settings,
    read_secret,
)
from trio_events.agent._dashboard_publisher import DashboardHeadConfig
from trio_events.agent._filtering import parse_exposable_event_types
from trio_events.agent._gcs_publisher import TASK_EVENT_TYPES, GcsPublisherConfig
from trio_events.agent._http_sink import HttpPublisherConfig
from trio_events.agent._ingest import AgentConfig
from trio_events.agent._publisher_config import DEFAULT_EXPOSABLE_EVENT_TYPES, PublisherConfig
from trio_events.agent._service import STORE_CONSUMER, AgentService, Destination, ServiceConfig
from trio_events.agent._spool import SpoolConfig
from trio_events.agent._task_publishing import TaskEventsDestination

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping

logger = logging.getLogger("trio_events.agent")

EXPORT_ADDR_ENV = "RAY_DASHBOARD_AGGREGATOR_AGENT_EVENTS_EXPORT_ADDR"
DEFAULT_DB = "trio-events.db"


def add_agent_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    from_env = [a.strip() for a in environ.get(EXPORT_ADDR_ENV, "").split(",") if a.strip()]
    parser.add_argument(
        "--export-addr",
        action="append",
        default=None,
        metavar="URL",
        help="HTTP endpoint to POST events to; repeat for several destinations, each with its "
        f"own publisher (default: env {EXPORT_ADDR_ENV}, comma-separated; none = local store)",
    )
    parser.set_defaults(export_addr_env=from_env)
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra HTTP header sent with every POST (repeatable)",
    )
    add_settings(parser, AGENT_SETTINGS, environ)
    add_settings(parser, PUBLISHER_SETTINGS, environ)
    add_settings(parser, TASK_PUBLISHER_SETTINGS, environ)
    # Benchmarks only (hidden): "protobuf" converts with protobuf's MessageToJson, as Ray does,
    # so a reference pipeline can differ from ours in nothing but the converter.
    parser.add_argument(
        "--json-converter", choices=("compiled", "protobuf"), default="compiled", help=SUPPRESS
    )


def _headers(values: list[str]) -> tuple[tuple[str, str], ...]:
    headers = []
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header takes NAME:VALUE, got {value!r}.")
        headers.append((name.strip(), content.strip()))
    return tuple(headers)


def _bearer_token(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.bearer_token_env:
        token = environ.get(args.bearer_token_env, "").strip()
        if not token:
            raise ValueError(
                f"--bearer-token-env names {args.bearer_token_env}, which is not set or empty."
            )
        return token
    if args.bearer_token_file:
        return read_secret(args.bearer_token_file, what="--bearer-token-file")
    return None


def service_config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ServiceConfig:
    """Build the frozen configuration; invalid values raise ValueError with one sentence."""
    host, port = args.listen
    auth = (
        read_secret(args.auth_token_file, what="--auth-token-file")
        if args.auth_token_file
        else None
    )
    agent = AgentConfig(
        host=host,
        port=port,
        max_message_bytes=args.max_message_bytes,
        auth_token=auth,
        on_full=args.on_full,
        buffer_size=args.buffer_size,
        max_batch_size=args.max_batch_size,
    )
    exposable = (
        parse_exposable_event_types(args.exposable_event_types)
        if args.exposable_event_types is not None
        else DEFAULT_EXPOSABLE_EVENT_TYPES
    )
    urls: list[str] = args.export_addr if args.export_addr is not None else args.export_addr_env

    def publisher(name: str, types: frozenset[int] | None = exposable) -> PublisherConfig:
        return PublisherConfig(
            name=name,
            exposable_event_types=types,
            preserve_proto_field_name=args.preserve_proto_field_name,
            linger=args.linger,
            max_retries=args.max_retries,
            give_up_after=args.give_up_after or None,
            initial_backoff=args.initial_backoff,
            max_backoff=args.max_backoff,
            jitter=args.jitter_ratio,
            attempt_timeout=args.publisher_timeout,
            converter=args.json_converter,
        )

    destinations: tuple[Destination, ...] = ()
    if args.publish:
        token = _bearer_token(args, environ)
        headers = _headers(args.header)
        destinations = tuple(
            Destination(
                HttpPublisherConfig(
                    url=url,
                    timeout=args.publisher_timeout,
                    compression=args.compression,
                    headers=headers,
                    bearer_token=token,
                    ca_bundle=args.ca_bundle or None,
                ),
                publisher("http_service" if i == 0 else f"http_service_{i + 1}"),
            )
            for i, url in enumerate(urls)
        )
    task_destinations = _task_destinations(args, publisher)
    # No export address at all: keep events in a local store instead of discarding them.
    store_path = (args.db or DEFAULT_DB) if not urls else None
    spool = None
    if args.spool:
        spool = SpoolConfig(
            path=args.spool,
            max_events=args.spool_max_events,
            max_bytes=args.spool_max_bytes or None,
            synchronous=args.spool_synchronous,
        )
    return ServiceConfig(
        agent=agent,
        destinations=destinations,
        task_destinations=task_destinations,
        store_path=store_path,
        # The local store is for looking at what arrived: it keeps every type unless the user
        # chose a list (Ray's HTTP default hides profile, placement group, submission jobs).
        store_publisher=publisher(
            STORE_CONSUMER, exposable if args.exposable_event_types is not None else None
        ),
        metrics_listen=args.metrics_listen,
        grace_period=args.grace_period,
        unhealthy_after=args.unhealthy_after,
        spool=spool,
    )


def _task_destinations(
    args: argparse.Namespace, publisher: Callable[[str, frozenset[int] | None], PublisherConfig]
) -> tuple[TaskEventsDestination, ...]:
    """Ray's GCS and dashboard-head publishers, when their switches are on."""
    wanted = [
        flag
        for flag, on in (
            ("--publish-to-gcs", args.publish_to_gcs),
            ("--publish-to-dashboard-head", args.publish_to_dashboard_head),
        )
        if on
    ]
    if wanted and not args.gcs_address:
        raise ValueError(
            f"{wanted[0]} needs --gcs-address (or TRIO_EVENTS_GCS_ADDRESS): the GCS's HOST:PORT."
        )
    destinations = []
    if args.publish_to_gcs:
        destinations.append(
            TaskEventsDestination(
                GcsPublisherConfig(args.gcs_address, timeout=args.publisher_timeout),
                publisher("ray_gcs", TASK_EVENT_TYPES),
            )
        )
    if args.publish_to_dashboard_head:
        destinations.append(
            TaskEventsDestination(
                DashboardHeadConfig(args.gcs_address, timeout=args.publisher_timeout),
                publisher("dashboard_head", TASK_EVENT_TYPES),
            )
        )
    return tuple(destinations)


async def run_agent(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = service_config_from_args(args, environ)
    service = AgentService(config)
    started = False
    try:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                addresses = await nursery.start(service.run)
                started = True
                agent = config.agent
                print(f"trio-events agent: gRPC AddEvents on {agent.host}:{addresses.grpc_port}")
                for destination in config.destinations:
                    print(f"trio-events agent: publishing to {destination.http.url}")
                if config.spool is not None:
                    print(
                        f"trio-events agent: spooling events in {config.spool.path} (resumed with "
                        f"{addresses.spool_resumed} events)"
                    )
                if addresses.store_path is not None:
                    print(
                        f"trio-events agent: no export address; storing events in "
                        f"{addresses.store_path} (query with: trio-events query --db "
                        f"{addresses.store_path})"
                    )
                elif not config.destinations:
                    print(
                        "trio-events agent: publishing disabled; events are counted and discarded"
                    )
                if addresses.metrics_port is not None:
                    mhost = config.metrics_listen[0] if config.metrics_listen else "127.0.0.1"
                    print(
                        f"trio-events agent: metrics on http://{mhost}:{addresses.metrics_port}/metrics"
                    )
                sys.stdout.flush()
                async for signum in signals:
                    logger.info("Received %s; shutting down in order.", signal.Signals(signum).name)
                    service.request_stop()
                    break
    except BaseExceptionGroup as group:
        # A start-up failure (a port in use, a file that cannot be opened or loaded) is a
        # sentence, like an invalid setting, not a traceback; a failure after start is a bug.
        failures = _leaves(group)
        if started or not all(isinstance(e, _STARTUP_ERRORS) for e in failures):
            raise
        reason = "; ".join(str(e).rstrip(".") for e in failures)
        if all(isinstance(e, ValueError) for e in failures):
            raise ValueError(f"{reason}.") from None  # an invalid setting, found at start
        print(f"trio-events agent: error: cannot start: {reason}.", file=sys.stderr)
        return 1
    summary = service.summary
    line = summary.line() if summary is not None else "not started"
    print(f"trio-events agent: stopped: {line}")
    return 0


_STARTUP_ERRORS = (OSError, ValueError, sqlite3.Error)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found
