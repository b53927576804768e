"""Sessions: ``nox`` runs tests, lint and typecheck (what CI runs); the rest are named explicitly.

- tests: the default pytest session (fast; property tests, in-process servers on 127.0.0.1,
  and the fast subset of the fault, fuzz and soak suites).
- lint / typecheck: ruff and mypy --strict (generated code excluded).
- protos: regenerate trio_events/_proto from protos/.
- bench: benchmarks/ in separate processes; writes bench-results/ (JSON, table, plot).
- faults, fuzz, soak: the slow reliability suites (see docs/reliability.md).
- interop: a real Ray 2.60 cluster exporting into trio-events (docs/ray-interop.md).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
SLOW_SUITES = ["tests/interop", "tests/faults", "tests/fuzz", "tests/soak"]


def install_with(session: nox.Session, *groups: str) -> None:
    deps: list[str] = []
    for group in groups:
        deps += nox.project.dependency_groups(PYPROJECT, group)
    session.install("-e", ".", *deps)


@nox.session
def tests(session: nox.Session) -> None:
    install_with(session, "test")
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
    """Benchmarks in separate processes on 127.0.0.1; report in bench-results/."""
    install_with(session, "test", "bench")
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
def interop(session: nox.Session) -> None:
    """A real single-node Ray 2.60 cluster whose GCS and workers export to trio-events."""
    install_with(session, "test", "interop")
    session.run("pytest", "tests/interop", "-s", *session.posargs)


@nox.session(name="interop-default")
def interop_default(session: nox.Session) -> None:
    """trio-events exporting into Ray's own aggregator agent (needs ray[default])."""
    install_with(session, "test", "interop-default")
    session.run("pytest", "tests/interop", "-s", *session.posargs)
