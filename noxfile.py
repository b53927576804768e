"""Sessions: ``nox`` runs tests, lint and typecheck (what CI runs); the rest are named explicitly.

- tests: the default pytest session (fast; property tests, in-process servers on 127.0.0.1,
  and the fast subset of the fault, fuzz and soak suites).
- lint / typecheck: ruff and mypy --strict (generated code excluded).
- protos: regenerate trio_events/_proto from protos/.
- bench: benchmarks/ in separate processes; writes bench-results/ (JSON, table, plot).
- faults, fuzz, soak: the slow reliability suites (see docs/reliability.md).
- interop: real Ray 2.60 clusters exporting into trio-events, Ray's dashboard fed through it
  (docs/ray-interop.md).
- lock: re-resolve lock/constraints.txt, the pins every other session installs from
  (docs/development.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nox

if TYPE_CHECKING:
    from collections.abc import Iterable

# nox.project.dependency_groups appeared in 2025.02.09.
nox.needs_version = ">=2025.2.9"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
SLOW_SUITES = ["tests/interop", "tests/faults", "tests/fuzz", "tests/soak"]

# One pip constraints file pins everything any session installs: pip itself, the build backend,
# the runtime dependencies, every extra and every dependency group. `nox -s lock` writes it.
LOCK = "lock/constraints.txt"
# What the lock holds besides pyproject.toml's dependencies; written by `nox -s lock`.
LOCK_EXTRA_INPUT = "lock/bootstrap.in"
# The resolver that writes the lock; a newer uv is a deliberate edit here.
UV = "uv==0.13.9"
DIGEST_LINE = "# pyproject.toml dependencies sha256: "


def dependency_digest(pyproject: dict[str, Any]) -> str:
    """The sha256 of everything in pyproject.toml that the lock is resolved from.

    Comments, order of tables and formatting do not count; any change to requires-python, the
    dependencies, an extra, a dependency group or the build requirements does.
    """
    project = pyproject.get("project", {})
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "dependency-groups": pyproject.get("dependency-groups", {}),
        "build-system.requires": pyproject.get("build-system", {}).get("requires", []),
    }
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def lock_is_current() -> bool:
    try:
        text = Path(LOCK).read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return f"{DIGEST_LINE}{dependency_digest(PYPROJECT)}" in text.splitlines()


def install_with(session: nox.Session, *groups: str, extras: Iterable[str] = ()) -> None:
    """Install pip, then the package (editable, with `extras`) and `groups`, all from the lock."""
    if not lock_is_current():
        # nox prints "Session NAME aborted: " before this and a full stop after it.
        session.error(
            f"{LOCK} is out of date with pyproject.toml; "
            "run `python -m nox -s lock` and commit the result"
        )
    # The venv's bundled pip differs between Python versions; the locked one behaves the same.
    session.install("-c", LOCK, "pip")
    deps: list[str] = []
    for group in groups:
        deps += nox.project.dependency_groups(PYPROJECT, group)
    project = f".[{','.join(extras)}]" if extras else "."
    # --build-constraint pins hatchling in pip's isolated build environment as well.
    session.install("-c", LOCK, "--build-constraint", LOCK, "-e", project, *deps)


@nox.session
def tests(session: nox.Session) -> None:
    install_with(session, "test", extras=["testing"])
    ignore = [f"--ignore={suite}" for suite in SLOW_SUITES if suite == "tests/interop"]
    session.run("pytest", "-m", "not slow", *ignore, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    install_with(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    install_with(session, "typecheck")
    session.run("mypy")


@nox.session
def protos(session: nox.Session) -> None:
    """Regenerate the committed protobuf and grpclib code from protos/."""
    install_with(session, "test")
    session.run("python", "scripts/generate_protos.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks in separate processes on 127.0.0.1; report in bench-results/.

    Installs Ray 2.60 with its dashboard (the interop-default group): the end-to-end figures
    run Ray's own AggregatorAgent next to ours.
    """
    install_with(session, "test", "bench", "interop-default")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def faults(session: nox.Session) -> None:
    """Fault injection with real processes and sockets on 127.0.0.1."""
    install_with(session, "test")
    session.run("pytest", "tests/faults", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Hostile input to every entry point (hypothesis, many examples)."""
    install_with(session, "test")
    session.run("pytest", "tests/fuzz", *session.posargs, env={"TRIO_EVENTS_FUZZ": "full"})


@nox.session
def soak(session: nox.Session) -> None:
    """Sustained load with an intermittently failing sink (bounded; TRIO_EVENTS_SOAK_SECONDS)."""
    install_with(session, "test")
    session.run("pytest", "tests/soak", "-s", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """The history page in a real headless Chromium (installs Debian's chromium when root).

    ``TRIO_EVENTS_SCREENSHOT_DIR=docs`` rewrites the screenshots docs/history.md shows.
    """
    install_with(session, "test")
    session.run("pytest", "tests/browser", *session.posargs)


@nox.session
def interop(session: nox.Session) -> None:
    """Real single-node Ray 2.60 clusters exporting to trio-events, and Ray's dashboard with it.

    ``ray[default]``: the dashboard head answers ``ray list tasks``; the clusters that export to
    ``trio-events agent`` start Ray's dashboard agent minimal, off the agent gRPC port.
    """
    install_with(session, "test", "interop", "interop-default")
    session.run("pytest", "tests/interop", "-s", *session.posargs)


@nox.session(name="interop-default")
def interop_default(session: nox.Session) -> None:
    """trio-events exporting into Ray's own aggregator agent (needs ray[default])."""
    install_with(session, "test", "interop-default")
    session.run("pytest", "tests/interop", "-s", *session.posargs)


@nox.session
def lock(session: nox.Session) -> None:
    """Re-resolve lock/constraints.txt from pyproject.toml with uv, keeping unchanged pins.

    Arguments after `--` go to `uv pip compile`: `-- --upgrade` moves every pin to the newest
    release, `-- --upgrade-package NAME` only NAME's.
    """
    session.install(UV)
    requires_python = PYPROJECT["project"]["requires-python"]
    lowest = re.fullmatch(r">=\s*(\d+\.\d+)(\.\d+)?", requires_python.strip())
    if lowest is None:
        session.error(f"cannot read the lowest Python from requires-python {requires_python!r}")
    build_requires = PYPROJECT["build-system"]["requires"]
    Path(LOCK_EXTRA_INPUT).write_text(
        "# Written by `python -m nox -s lock`: what the lock holds besides pyproject.toml's\n"
        "# dependencies. pip is the installer every session upgrades to first; the rest are\n"
        "# [build-system].requires, pinned in pip's isolated build environment.\n"
        + "".join(f"{line}\n" for line in ["pip", *build_requires]),
        encoding="utf-8",
    )
    groups = [arg for group in PYPROJECT.get("dependency-groups", {}) for arg in ("--group", group)]
    session.run(
        "uv", "pip", "compile", "--quiet",
        "pyproject.toml", LOCK_EXTRA_INPUT,
        "--all-extras", *groups,
        # One file for every OS and every Python from the lowest that pyproject.toml allows.
        "--universal", "--python-version", lowest.group(1),
        "--custom-compile-command", "python -m nox -s lock",
        "--output-file", LOCK,
        *session.posargs,
    )  # fmt: skip
    lines = Path(LOCK).read_text(encoding="utf-8").splitlines(keepends=True)
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1
    lines[header:header] = [
        f"{DIGEST_LINE}{dependency_digest(PYPROJECT)}\n",
        "# (nox checks this before installing; see docs/development.md)\n",
    ]
    Path(LOCK).write_text("".join(lines), encoding="utf-8")
