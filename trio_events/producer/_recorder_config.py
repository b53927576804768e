"""RecorderConfig, the settings of one recorder, and the backoff they define.

Defaults are Ray 2.60's where Ray has the setting; the environment is never read here (see
docs/recorder.md for mapping Ray's variables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and value > 0):
        raise ValueError(f"RecorderConfig.{name} must be a number > 0, got {value!r}.")


@final
@attrs.frozen(kw_only=True)
class RecorderConfig:
    """Settings of one recorder (defaults are Ray 2.60's where Ray has the setting)."""

    max_queued_events: int = 10_000  # RAY_ray_event_recorder_max_queued_events
    report_interval: float = 1.0  # RAY_ray_events_report_interval_ms / 1000
    export_timeout: float = 5.0  # Ray has no deadline at all
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    backoff_multiplier: float = 2.0
    #: Fraction of each backoff delay that is randomised away (0 = exact, 1 = "full jitter").
    backoff_jitter: float = 0.2
    shutdown_flush_timeout: float = 5.0  # RAY_task_events_shutdown_flush_timeout_ms / 1000
    enabled: bool = True  # RAY_enable_ray_event
    source: str = "core_worker"  # the metrics' Source label
    #: Largest request in merged events (Ray's task_events_send_batch_size); a request refused
    #: with RESOURCE_EXHAUSTED is halved down to one event, then grows back on success.
    max_events_per_request: int = 10_000
    #: Largest request in bytes, below the agent's 20 MiB (Ray's AGENT_GRPC_MAX_MESSAGE_LENGTH).
    max_request_bytes: int = 16 * 1024 * 1024

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_queued_events, bool) or not (
            isinstance(self.max_queued_events, int) and self.max_queued_events >= 1
        ):
            raise ValueError(
                f"RecorderConfig.max_queued_events must be an integer >= 1, "
                f"got {self.max_queued_events!r}."
            )
        for name in ("max_events_per_request", "max_request_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 1):
                raise ValueError(f"RecorderConfig.{name} must be an integer >= 1, got {value!r}.")
        for name in ("report_interval", "export_timeout", "backoff_initial", "backoff_max"):
            _positive(name, getattr(self, name))
        if self.backoff_max < self.backoff_initial:
            raise ValueError("RecorderConfig.backoff_max must be >= backoff_initial.")
        if not self.backoff_multiplier >= 1:
            raise ValueError("RecorderConfig.backoff_multiplier must be >= 1.")
        if not 0 <= self.backoff_jitter <= 1:
            raise ValueError("RecorderConfig.backoff_jitter must be between 0 and 1.")
        if not self.shutdown_flush_timeout >= 0:
            raise ValueError("RecorderConfig.shutdown_flush_timeout must be >= 0.")
        if not (isinstance(self.source, str) and self.source):
            raise ValueError("RecorderConfig.source must be a non-empty string.")


def backoff_delay(config: RecorderConfig, failures: int, rand: Callable[[], float]) -> float:
    """Seconds to wait after the ``failures``-th consecutive failed export (``failures >= 1``).

    ``initial * multiplier**(failures - 1)``, capped at ``backoff_max``, then shortened by up to
    ``backoff_jitter`` of itself (``rand()`` in [0, 1)) so that recorders do not retry in step.
    """
    exponent = min(failures - 1, 64)  # beyond this the cap applies anyway; avoids float overflow
    base = min(config.backoff_max, config.backoff_initial * config.backoff_multiplier**exponent)
    return base * (1.0 - config.backoff_jitter * rand())
