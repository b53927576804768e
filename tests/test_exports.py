"""The curated public surface: sorted, complete, and concrete classes are final."""

from __future__ import annotations

import enum
import inspect

import trio_events


def test_all_is_sorted_and_complete() -> None:
    public = {n for n in vars(trio_events) if not n.startswith("_")} - {"annotations"}

    # isort-style order, as ruff keeps it: CONSTANTS, then Classes, then functions and modules.
    def key(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert trio_events.__all__ == sorted(trio_events.__all__, key=key)
    assert set(trio_events.__all__) == public


def test_public_concrete_classes_are_final() -> None:
    # Meant to be subclassed: the event base class, and exception bases of a hierarchy.
    extensible = {"RayEventBase", "ExportError", "RetryableExportError"}
    for name in trio_events.__all__:
        obj = getattr(trio_events, name)
        if not inspect.isclass(obj) or name in extensible:
            continue
        if getattr(obj, "_is_protocol", False) or issubclass(obj, enum.Enum):
            continue
        assert getattr(obj, "__final__", False), f"{name} should be @final"
