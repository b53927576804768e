"""The docs stay true by construction: their code runs and their commands parse.

- Every ```python block in ``docs/*.md`` and ``README.md`` runs, each in its own interpreter
  (``python -c``, in a temporary directory), and must exit 0. A block that cannot run says why
  in a ``<!-- not-run: REASON -->`` comment on the line before it; those are counted, so none
  is skipped silently (:data:`NOT_RUN`).
- A block that talks to an aggregator is preceded by ``<!-- run: agent=HOST:PORT ... -->``: the
  test starts an :class:`AgentService` on a free port and runs the block with ``HOST:PORT``
  replaced by the agent's address. ``free=N`` also replaces the port number ``N`` by a free
  one; ``auth_token=T`` and ``max_message_bytes=N`` configure the agent.
- Every ``trio-events ...`` command line in a code block (``$ trio-events ...`` or a plain line)
  and in an inline code span is parsed by the real parser (``build_parser``), so a doc that names
  a flag or a command that does not exist fails. ``<...>`` placeholders stand for one value.
"""

from __future__ import annotations

import argparse
import re
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from trio_events._cli._main import build_parser
from trio_events._cli._settings import ArgumentError
from trio_events.agent._ingest import AgentConfig
from trio_events.agent._service import AgentService, ServiceConfig

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
DEADLINE = 60  # seconds for one block, agent included

#: Blocks that do not run, by page: each says why in its ``not-run`` comment.
NOT_RUN = {"events.md": 1, "testing.md": 1}

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
_NOTE = re.compile(r"<!--\s*(?P<kind>not-run|run):\s*(?P<text>.*?)\s*-->\s*$")


@attrs.frozen
class Block:
    page: str
    line: int
    lang: str
    body: str
    note: tuple[str, str] | None  # ("not-run", reason) or ("run", options)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        note = _NOTE.search(before)
        found.append(
            Block(
                page=path.name,
                line=text[: match.start()].count("\n") + 1,
                lang=match["lang"],
                body=match["body"],
                note=None if note is None else (note["kind"], note["text"]),
            )
        )
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]
RUNNABLE = [b for b in PYTHON if b.note is None or b.note[0] == "run"]


def test_every_python_block_runs_or_says_why_not() -> None:
    not_run: dict[str, int] = {}
    for block in PYTHON:
        if block.note is not None and block.note[0] == "not-run":
            assert block.note[1], f"{block.id}: a not-run comment must give its reason"
            not_run[block.page] = not_run.get(block.page, 0) + 1
    assert not_run == NOT_RUN
    assert len(RUNNABLE) >= 10  # the extraction itself works


def _options(block: Block) -> dict[str, str]:
    if block.note is None:
        return {}
    return dict(item.split("=", 1) for item in block.note[1].split())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _run_block(code: str, cwd: Path) -> None:
    result = await trio.run_process(
        [sys.executable, "-c", code], cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
async def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    options = _options(block)
    code = block.body
    if "free" in options:
        code = code.replace(options["free"], str(_free_port()))
    with trio.fail_after(DEADLINE):
        if "agent" not in options:
            await _run_block(code, tmp_path)
            return
        agent = AgentConfig(
            port=0,
            auth_token=options.get("auth_token"),
            max_message_bytes=int(options.get("max_message_bytes", 20 * 1024 * 1024)),
        )
        config = ServiceConfig(agent=agent, store_path=str(tmp_path / "agent.db"))
        service = AgentService(config)
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(service.run)
            code = code.replace(options["agent"], f"127.0.0.1:{addresses.grpc_port}")
            await _run_block(code, tmp_path)
            service.request_stop()
        summary = await service.wait_stopped()
        assert summary is not None
        assert summary.delivered > 0  # the block really talked to this agent
        assert summary.abandoned == 0


# --- commands ------------------------------------------------------------------------------


_INLINE = re.compile(r"(?<!`)`(trio-events [^`\n]+)`(?!`)")
_PLACEHOLDER = re.compile(r"<[^<>]+>")


def commands() -> list[tuple[str, str, bool]]:
    """``(where, command, whole)`` for every trio-events command line the docs show.

    ``whole`` is False for an inline code span, which may name a command without its required
    arguments (`trio-events loadgen --ids-out`): only its command and flags are checked.
    """
    found: list[tuple[str, str, bool]] = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in blocks(page):
            if block.lang not in ("console", "sh", "shell", "bash", ""):
                continue
            for n, line in _logical_lines(block.body, block.line + 1):
                for part in line.split("&&"):  # `pip install . && trio-events demo`
                    part = part.strip().removeprefix("$ ")
                    if part.startswith("trio-events ") and not _is_output(part):
                        found.append((f"{page.name}:{n}", part, True))
        prose = _FENCE.sub("", text)
        for match in _INLINE.finditer(prose):
            span = match[1]
            if not _is_output(span) and " / " not in span:  # "agent / loadgen" names several
                found.append(
                    (f"{page.name}:{prose[: match.start()].count(chr(10)) + 1}~", span, False)
                )
    return found


def _logical_lines(body: str, first: int) -> list[tuple[int, str]]:
    """``(number, line)`` with a line continued by a trailing backslash joined to the next."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for n, line in enumerate(body.splitlines(), first):
        if pending is not None:
            n, line = pending[0], pending[1] + " " + line.strip()
        pending = (n, line[:-1]) if line.endswith("\\") else None
        if pending is None:
            joined.append((n, line))
    if pending is not None:
        joined.append(pending)
    return joined


def _is_output(line: str) -> bool:
    """A line the program prints (``trio-events agent: error: ...``), not a command."""
    words = line.split()
    return len(words) > 1 and words[1].endswith(":")


def _argv(command: str) -> list[str]:
    command = command.split(" #", 1)[0]  # a trailing shell comment
    command = re.split(r"\s(?:&&|\||;|>|2>)\s", command, maxsplit=1)[0]
    command = command.removesuffix("&").strip()  # run in the background
    command = _PLACEHOLDER.sub("x", command)
    argv = shlex.split(command)[1:]
    return argv[:-1] if argv and argv[-1] in ("...", "…") else argv


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


COMMANDS = commands()


def test_the_docs_show_commands() -> None:
    assert sum(whole for _, _, whole in COMMANDS) >= 20
    assert sum(not whole for _, _, whole in COMMANDS) >= 10


@pytest.mark.parametrize(("where", "command", "whole"), COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_command_parses(where: str, command: str, whole: bool, capsys: Any) -> None:
    parser = build_parser()
    argv = _argv(command)
    if not whole:
        # Only the command and its flags: `trio-events loadgen --ids-out` in prose.
        words = [w for w in argv if not w.startswith("-")]
        subparsers = _subcommands(parser)
        if words and words[0] in subparsers:
            sub = subparsers[words[0]]
            known = _flags(sub) | _flags(parser)
            for name in (w for w in words[1:] if w in _subcommands(sub)):
                known |= _flags(_subcommands(sub)[name])
        else:
            assert not words or not words[0].isidentifier(), f"{where}: no command {words[0]!r}"
            known = _flags(parser)
        unknown = [w.split("=", 1)[0] for w in argv if w.startswith("-")]
        assert set(unknown) <= known, f"{where}: {command!r} names flags that do not exist"
        return
    code: int | str | None = 0
    try:
        parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0
        code = exc.code
    except ArgumentError as exc:  # a refused command
        code = str(exc)
    assert code == 0, f"{where}: {command!r}: {capsys.readouterr().err.strip()}"


@pytest.mark.parametrize(
    ("command", "whole"),
    [
        ("trio-events agent --no-such-flag 1", True),
        ("trio-events agnet --listen 127.0.0.1:1", True),
        ("trio-events loadgen --no-such-flag", False),
        ("trio-events nothing", False),
    ],
)
def test_a_command_the_parser_refuses_fails(command: str, whole: bool, capsys: Any) -> None:
    with pytest.raises(AssertionError):
        test_command_parses("self-test", command, whole, capsys)


def test_the_architecture_map_lists_every_module() -> None:
    """docs/architecture.md names every private module of the package, and only real ones."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "trio_events"
    modules = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "_proto" not in p.parts
    }
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.M))
    assert modules - listed == set(), "add these modules to the map in docs/architecture.md"
    assert listed - modules == set(), "these modules in docs/architecture.md do not exist"
