"""``trio-events agent``: resolved settings to a frozen ``ServiceConfig``, then a running service.

Destinations come from ``--export-addr`` or Ray's ``EVENTS_EXPORT_ADDR`` when either is given
(each with the agent-wide publisher settings), otherwise from the config file's
``[[agent.destination]]`` tables (each setting there first, then ``[agent]``). Flags and
variables override the file for every destination, as everywhere else.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import sys
from argparse import SUPPRESS
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from trio_events._cli._settings import Resolved, read_secret, resolve, secret_from_env
from trio_events._cli._tables import PUBLISHER_SETTINGS
from trio_events._cli._tool_settings import DEFAULT_DB
from trio_events._logging import redact_url
from trio_events._metrics import Metrics
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
    from collections.abc import AsyncIterator, Mapping

logger = logging.getLogger("trio_events.cli.agent")

PER_DESTINATION = tuple(s for s in PUBLISHER_SETTINGS if s.per_destination)
_WILDCARDS = ("", "0.0.0.0", "::")
RAY_SESSION_LATEST = Path("/tmp/ray/session_latest")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Benchmarks only (hidden): "protobuf" converts with protobuf's MessageToJson, as Ray does,
    # so a reference pipeline can differ from ours in nothing but the converter.
    parser.add_argument(
        "--json-converter", choices=("compiled", "protobuf"), default="compiled", help=SUPPRESS
    )


def destination_settings(
    args: argparse.Namespace, environ: Mapping[str, str]
) -> list[tuple[str, str, Resolved]]:
    """``(url, publisher name, settings)`` of every destination, in order."""
    file = args.config_file
    agent_layer = [] if file is None else [file.layer("agent")]
    found: list[tuple[str, str, Resolved]] = []
    if args.origins["export_addr"] != "default" or file is None:
        for i, url in enumerate(args.export_addr):
            resolved = resolve(PER_DESTINATION, args.given, environ, agent_layer)
            found.append((url, "http_service" if i == 0 else f"http_service_{i + 1}", resolved))
        return found
    for i, table in enumerate(file.destinations):
        layers = [file.destination_layer(i), *agent_layer]
        resolved = resolve(PER_DESTINATION, args.given, environ, layers)
        name = str(table.get("name") or ("http_service" if i == 0 else f"http_service_{i + 1}"))
        found.append((str(table["url"]), name, resolved))
    return found


def _exposable(value: str | None) -> frozenset[int] | None:
    return DEFAULT_EXPOSABLE_EVENT_TYPES if value is None else parse_exposable_event_types(value)


def _publisher(
    name: str, s: Resolved | argparse.Namespace, converter: str, *, several: bool = False
) -> PublisherConfig:
    values = s.values if isinstance(s, Resolved) else vars(s)
    return PublisherConfig(
        name=name,
        exposable_event_types=_exposable(values["exposable_event_types"]),
        preserve_proto_field_name=values["preserve_proto_field_name"],
        linger=values["linger"],
        max_retries=values["max_retries"],
        give_up_after=values["give_up_after"] or None,
        initial_backoff=values["initial_backoff"],
        max_backoff=values["max_backoff"],
        jitter=values["jitter_ratio"],
        converter=converter,  # type: ignore[arg-type]  # argparse's choices checked it
        max_in_flight=values["max_in_flight"],
        max_batch_bytes=values["max_batch_bytes"],
        max_retry_after=values["max_retry_after"],
        dead_letter=_dead_letter_path(values["dead_letter"], name, several=several),
    )


def _dead_letter_path(base: str, publisher: str, *, several: bool) -> str | None:
    """``--dead-letter``'s file for one publisher: the path itself, or with several
    destinations (or the local store) the publisher's name before the suffix."""
    if not base:
        return None
    if not several and publisher.startswith("http_service"):
        return base
    stem, dot, suffix = base.rpartition(".")
    return f"{stem}.{publisher}.{suffix}" if dot and "/" not in suffix else f"{base}.{publisher}"


def _token(s: Resolved, environ: Mapping[str, str]) -> str | None:
    if s["bearer_token_env"]:
        return secret_from_env(environ, s["bearer_token_env"], what="--bearer-token-env")
    if s["bearer_token_file"]:
        return read_secret(s["bearer_token_file"], what="--bearer-token-file")
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
        receive_budget_bytes=args.receive_budget_bytes,
        receive_timeout=args.receive_timeout,
    )
    converter = getattr(args, "json_converter", "compiled")
    found = destination_settings(args, environ)
    destinations: tuple[Destination, ...] = ()
    if args.publish:
        destinations = tuple(
            Destination(
                HttpPublisherConfig(
                    url=url,
                    timeout=s["publisher_timeout"],
                    compression=s["compression"],
                    headers=tuple(s["header"]),
                    bearer_token=_token(s, environ),
                    ca_bundle=s["ca_bundle"] or None,
                ),
                _publisher(name, s, converter, several=len(found) > 1),
            )
            for url, name, s in found
        )
    # No export address at all: keep events in a local store instead of discarding them.
    store_path = (args.db or DEFAULT_DB) if not found else None
    spool = None
    if args.spool:
        spool = SpoolConfig(
            path=args.spool,
            max_events=args.spool_max_events,
            max_bytes=args.spool_max_bytes or None,
            synchronous=args.spool_synchronous,
            max_file_bytes=args.spool_max_file_bytes or None,
            min_free_bytes=args.spool_min_free_bytes,
        )
    # One SQLite writer: more than one batch in flight would only queue on its lock.
    store_publisher = attrs.evolve(_publisher(STORE_CONSUMER, args, converter), max_in_flight=1)
    if args.origins["exposable_event_types"] == "default":
        # The store keeps every type unless the user chose a list (ServiceConfig's default).
        store_publisher = ServiceConfig().store_publisher
    return ServiceConfig(
        agent=agent,
        destinations=destinations,
        task_destinations=_task_destinations(args, converter),
        store_path=store_path,
        store_publisher=store_publisher,
        conversion_workers=args.workers or available_cpus(),
        metrics_listen=args.metrics_listen,
        grace_period=args.grace_period,
        unhealthy_after=args.unhealthy_after,
        spool=spool,
    )


def _task_destinations(
    args: argparse.Namespace, converter: str
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

    def publisher(name: str) -> PublisherConfig:
        return attrs.evolve(
            _publisher(name, args, converter), exposable_event_types=TASK_EVENT_TYPES
        )

    destinations = []
    if args.publish_to_gcs:
        destinations.append(
            TaskEventsDestination(
                GcsPublisherConfig(args.gcs_address, timeout=args.publisher_timeout),
                publisher("ray_gcs"),
            )
        )
    if args.publish_to_dashboard_head:
        destinations.append(
            TaskEventsDestination(
                DashboardHeadConfig(args.gcs_address, timeout=args.publisher_timeout),
                publisher("dashboard_head"),
            )
        )
    return tuple(destinations)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), the default for ``--workers``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ray_labels(args: argparse.Namespace) -> dict[str, str]:
    """Ray's common metric tags that are known here: ip, pid and (if any) SessionName."""
    labels = {"pid": str(os.getpid())}
    ip = args.node_ip or _node_ip(args.listen[0])
    if ip:
        labels["ip"] = ip
    session = args.session_name
    if not session and RAY_SESSION_LATEST.exists():
        session = RAY_SESSION_LATEST.resolve().name
    if session:
        labels["SessionName"] = session
    return labels


def _node_ip(host: str) -> str:
    if host not in _WILDCARDS:
        return host
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return ""


def warn_about(config: ServiceConfig, args: argparse.Namespace) -> None:
    """Log the settings that are valid but probably not what was meant."""
    publishers = [d.publisher for d in config.destinations]
    if config.store_path is not None:
        publishers.append(config.store_publisher)
    for publisher in publishers:
        if publisher.exposable_event_types == frozenset():
            logger.warning(
                "The exposable event types of %s are empty (%s): as in Ray, no event is sent "
                "there and every event is counted as filtered. Unset it for Ray's default list, "
                "or give ALL.",
                publisher.name,
                args.origins.get("exposable_event_types", "the config file"),
            )


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config = service_config_from_args(args, environ)
    warn_about(config, args)
    metrics = Metrics(ray_labels=ray_labels(args))
    store = config.store_path
    store_existed = store is None or os.path.exists(store)
    try:
        code = trio.run(run_agent, config, metrics)
    except BaseException:
        if not store_existed:
            _remove_store(store)
        raise
    if code != 0 and not store_existed:
        _remove_store(store)  # a failed start leaves nothing behind
    return code


def _remove_store(path: str | None) -> None:
    for suffix in ("", "-wal", "-shm"):
        if path is not None:
            Path(path + suffix).unlink(missing_ok=True)


async def run_agent(config: ServiceConfig, metrics: Metrics) -> int:
    service = AgentService(config, metrics=metrics)
    started = False
    try:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                addresses = await nursery.start(service.run)
                started = True
                agent = config.agent
                print(f"trio-events agent: gRPC AddEvents on {agent.host}:{addresses.grpc_port}")
                for destination in config.destinations:
                    shown = redact_url(destination.http.url)  # a token in the URL stays secret
                    print(f"trio-events agent: publishing to {shown}")
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
                await _follow_signals(signals, service, nursery)
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


async def _follow_signals(
    signals: AsyncIterator[int], service: AgentService, nursery: trio.Nursery
) -> None:
    """The first SIGTERM or SIGINT starts the ordered shutdown; another one cuts its drain
    short. The handlers stay ours until the service has stopped, so a repeated signal never
    kills the process before its summary is counted and printed. SIGHUP only explains."""
    with trio.CancelScope() as listening:

        async def stop_listening() -> None:
            await service.wait_stopped()
            listening.cancel()

        nursery.start_soon(stop_listening)
        first = True
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                _explain_sighup()
            elif first:
                logger.info("Received %s; shutting down in order.", name)
                service.request_stop()
                first = False
            else:
                logger.warning("Received %s again; ending the drain now.", name)
                service.hurry()


def _explain_sighup() -> None:
    logger.warning(
        "Received SIGHUP; settings are not reloaded while running (docs/configuration.md says "
        "why): restart the agent to apply them, with --spool to keep what is buffered."
    )


_STARTUP_ERRORS = (OSError, ValueError, sqlite3.Error)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found
