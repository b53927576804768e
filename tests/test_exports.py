"""The curated public surface: sorted, complete, and concrete classes are final."""

from __future__ import annotations

import inspect

import trio_events


def test_all_is_sorted_and_complete() -> None:
    public = {n for n in vars(trio_events) if not n.startswith("_")} - {"annotations"}
    assert trio_events.__all__ == sorted(trio_events.__all__)
    assert set(trio_events.__all__) == public


def test_public_concrete_classes_are_final() -> None:
    extensible = {"RayEventBase", "Metrics"}  # meant to be subclassed / plain registry holder
    for name in trio_events.__all__:
        obj = getattr(trio_events, name)
        if inspect.isclass(obj) and name not in extensible:
            assert getattr(obj, "__final__", False), f"{name} should be @final"
