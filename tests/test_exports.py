"""The curated public surfaces: sorted, complete, concrete classes final, parts kept apart."""

from __future__ import annotations

import enum
import inspect
import subprocess
import sys
import types

import pytest

import trio_events
import trio_events.agent
import trio_events.producer
import trio_events.store
import trio_events.testing
import trio_events.testing.strategies

PACKAGES = [
    trio_events,
    trio_events.producer,
    trio_events.agent,
    trio_events.store,
    trio_events.testing,
    trio_events.testing.strategies,
]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_all_is_sorted_and_complete(package: types.ModuleType) -> None:
    # Sub-packages are reached by import, not re-exported (pb is the one module that is).
    public = {
        n
        for n, v in vars(package).items()
        if not n.startswith("_") and not (isinstance(v, types.ModuleType) and n != "pb")
    } - {"annotations"}

    # isort-style order, as ruff keeps it: CONSTANTS, then Classes, then functions and modules.
    def key(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert package.__all__ == sorted(package.__all__, key=key)
    assert set(package.__all__) == public


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_public_concrete_classes_are_final(package: types.ModuleType) -> None:
    # Meant to be subclassed: the event base class, and exception bases of a hierarchy.
    extensible = {"RayEventBase", "ExportError", "RetryableExportError", "InvalidEventError"}
    for name in package.__all__:
        obj = getattr(package, name)
        if not inspect.isclass(obj) or name in extensible:
            continue
        if getattr(obj, "_is_protocol", False) or issubclass(obj, enum.Enum):
            continue
        assert getattr(obj, "__final__", False), f"{name} should be @final"


def test_no_test_or_benchmark_helpers_are_public() -> None:
    everything = {n for p in PACKAGES for n in p.__all__}
    for helper in ("realistic_events", "protobuf_reference_dumps", "TaskMetadataStore"):
        assert helper not in everything


def test_the_producer_library_imports_no_agent_or_store_code() -> None:
    """A trio app that embeds the recorder loads only the producer part (and the wire schema)."""
    code = (
        "import sys, trio_events, trio_events.producer\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('trio_events'))\n"
        "print('\\n'.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert "trio_events.producer._recorder" in out
    leaked = [m for m in out if m.startswith(("trio_events.agent", "trio_events.store"))]
    assert leaked == []
    assert not [m for m in out if m.startswith("trio_events._cli")]
