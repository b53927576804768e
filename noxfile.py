"""Sessions: ``nox`` runs tests, lint and typecheck (what CI runs); the rest are named explicitly.

- tests: the default pytest session (fast; property tests, in-process servers on 127.0.0.1).
- lint / typecheck: ruff and mypy --strict (generated code excluded).
- protos: regenerate trio_events/_proto from protos/.
- bench, faults, fuzz, soak, interop: slow suites, never part of the default run.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")


def install_with(session: nox.Session, *groups: str) -> None:
    deps: list[str] = []
    for group in groups:
        deps += nox.project.dependency_groups(PYPROJECT, group)
    session.install("-e", ".", *deps)


@nox.session
def tests(session: nox.Session) -> None:
    install_with(session, "test")
    session.run("pytest", "-m", "not slow", *session.posargs)


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
