"""lock/constraints.txt pins everything pyproject.toml asks for (docs/development.md).

noxfile.py refuses to install from a lock whose recorded pyproject.toml digest is stale; these
tests check the lock's content itself, so a hand edit that drops or breaks a pin is caught too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = ROOT / "lock" / "constraints.txt"


def _pins() -> dict[str, list[Requirement]]:
    """Every pin in the lock by package name (a name may have one pin per Python range)."""
    pins: dict[str, list[Requirement]] = {}
    for raw in LOCK.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            pin = Requirement(line)
            pins.setdefault(canonicalize_name(pin.name), []).append(pin)
    return pins


def _declared() -> list[str]:
    """Every requirement string in pyproject.toml: dependencies, extras, groups, build."""
    project = PYPROJECT["project"]
    declared = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    for group in PYPROJECT.get("dependency-groups", {}).values():
        declared += [entry for entry in group if isinstance(entry, str)]  # not {include-group}
    declared += PYPROJECT["build-system"]["requires"]
    return ["pip", *declared]


def test_every_pin_is_exact() -> None:
    for name, pins in _pins().items():
        for pin in pins:
            assert [spec.operator for spec in pin.specifier] == ["=="], (name, str(pin))
            assert not pin.extras, f"pip constraints may not name extras: {pin}"


def _for_this_interpreter(declared: str) -> bool:
    marker = Requirement(declared).marker
    return marker is None or marker.evaluate()


@pytest.mark.parametrize("declared", [d for d in _declared() if _for_this_interpreter(d)])
def test_every_declared_requirement_is_pinned_within_its_range(declared: str) -> None:
    requirement = Requirement(declared)
    pins = [
        pin
        for pin in _pins().get(canonicalize_name(requirement.name), [])
        if pin.marker is None or pin.marker.evaluate()
    ]
    assert len(pins) == 1, (
        f"{declared!r} has {len(pins)} pins for this interpreter in {LOCK.name}; "
        "run `python -m nox -s lock`"
    )
    (version,) = (Version(spec.version) for spec in pins[0].specifier)
    assert requirement.specifier.contains(version, prereleases=True), (declared, str(pins[0]))
