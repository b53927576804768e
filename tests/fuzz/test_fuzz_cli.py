"""Invalid configuration to every subcommand, through ``main()`` with a hostile environment.

Flags and environment variables are discovered from the parser and the settings tables, so new
ones (the spool's, say) are fuzzed as soon as they exist. Values come from pools of the kinds
people get wrong (signs, NaN, infinity, non-ASCII digits, empty strings, unreadable files,
ports out of range) plus random text. Whatever the input, ``main()`` must return 0, 1 or 2 and
never let an exception out: an invalid setting ends with exit status 2 and one sentence on
stderr. Valid configurations really start (on 127.0.0.1, port 0) and stop at once: the signal
receiver is replaced by one that delivers SIGTERM immediately, and the loadgen's event source by
an empty one, so no process talks to anything.

Paths only ever point into a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import signal
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trustme
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ, Tally
from tests.harness import clean_env, command
from trio_events._cli import _loadgen, _tables
from trio_events._cli import _main as _cli
from trio_events.store._sqlite import EventStore

if TYPE_CHECKING:
    from collections.abc import Iterator

SUBCOMMANDS = ("agent", "loadgen", "collect", "query")
GENERIC = [
    "", "0", "-1", "1", "3", "1.5", "-0.5", "nan", "NaN", "inf", "-inf", "1e309", "0x10", " 5 ",
    "\u0663", "\u00b2", "1_000", "9" * 30, "true", "false", "TRUE", "yes", "none", "ALL", "all",
    "drop_oldest", "reject", "gzip", "zstd", "TASK_DEFINITION_EVENT", "TASK_DEFINITION_EVENT,X",
    ",,", "compiled", "protobuf", "mixed", "lifecycle", "FULL", "OFF", "NORMAL", "-", "--",
]  # fmt: skip
LISTEN = [
    "127.0.0.1:0", "[::1]:0", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:x", "127.0.0.1",
    "", "127.0.0.1:\u00b2", "127.0.0.1:\u0663", "[127.0.0.1:0", "127.0.0.1:0:0",
]  # fmt: skip
TARGETS = ["127.0.0.1:1", "127.0.0.1:0", "127.0.0.1", "[::1]:5", "[::1", "nowhere", ":5",
           "127.0.0.1:99999", "", "[zz]:5"]  # fmt: skip
URLS = [
    "http://127.0.0.1:9/", "https://127.0.0.1:9/v1", "ftp://x", "http://", "127.0.0.1:9", "",
    "http://user:pw@127.0.0.1/", "http://127.0.0.1:9/,http://127.0.0.1:9/", "http://[::1]:9/",
    "http://127.0.0.1:99999/", "http://127.0.0.1:9/\n",
]  # fmt: skip
HEADERS = ["X-A:b", "bad", ":x", "Content-Type:x", "Authorization: Bearer y", "X-A:\x01", "X A:b"]
TOKEN_VARS = ["TRIO_FUZZ_TOKEN", "TRIO_FUZZ_EMPTY", "TRIO_FUZZ_UNSET", ""]
text = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=16
)


def _path_pool(tmp: Path) -> list[str]:
    """Files of every kind a path setting can be given, all inside ``tmp``."""
    (tmp / "dir").mkdir(exist_ok=True)
    (tmp / "empty").write_text("")
    (tmp / "token").write_text("s3cret\n")
    (tmp / "garbage").write_bytes(b"\xff\xfe not a pem, not a db\n")
    if not (tmp / "ca.pem").exists():
        trustme.CA().cert_pem.write_to_path(str(tmp / "ca.pem"))
    if not (tmp / "store.db").exists():
        EventStore(tmp / "store.db").close()
    names = ["dir", "empty", "token", "garbage", "ca.pem", "store.db", "missing", "no/such/dir/x"]
    return ["", *(str(tmp / n) for n in names)]


def _pool_for(dest: str, paths: list[str]) -> st.SearchStrategy[str]:
    path_like = any(
        word in dest for word in ("file", "bundle", "db", "spool", "ids_out", "workdir")
    )
    if path_like and not any(word in dest for word in ("max", "synchronous")):
        return st.sampled_from(paths)
    if "listen" in dest:
        return st.sampled_from(LISTEN)
    if dest == "target":
        return st.sampled_from(TARGETS)
    if "export_addr" in dest:
        return st.one_of(st.sampled_from(URLS), text)
    if dest == "header":
        return st.sampled_from(HEADERS)
    if dest == "bearer_token_env":
        return st.sampled_from(TOKEN_VARS)
    return st.one_of(st.sampled_from(GENERIC), text)


def _options(subcommand: str) -> list[tuple[str, str]]:
    """(flag, dest) of every option of ``subcommand`` that takes a value."""
    parser = _cli.build_parser()
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = subparsers.choices[subcommand]
    return [
        (a.option_strings[-1], a.dest)
        for a in sub._actions
        if a.option_strings and a.nargs != 0 and a.dest != "help"
    ]


ENV_SETTINGS = [
    (s.env, s.dest)
    for table in (_tables.GLOBAL_SETTINGS, *(c.settings for c in _tables.COMMANDS))
    for s in table
    if s.env and s.dest != "config"
]


@st.composite
def invocations(draw: st.DrawFn, paths: list[str]) -> tuple[list[str], dict[str, str]]:
    subcommand = draw(st.sampled_from(SUBCOMMANDS))
    argv = [subcommand]
    if subcommand == "agent":
        argv += ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
    elif subcommand == "loadgen":
        argv += ["--target", "127.0.0.1:1", "--events", "5", "--flush-timeout", "0.5"]
    elif subcommand == "collect":
        argv += ["--listen", "127.0.0.1:0", "--db", paths[-3]]  # a fresh file in the tmp dir
    options = _options(subcommand)
    if options:
        for flag, dest in draw(st.lists(st.sampled_from(options), max_size=4)):
            argv += [flag, draw(_pool_for(dest, paths))]
    if subcommand == "query":
        argv += draw(st.sampled_from([[], ["counts"], ["failed"], ["recent", "--kind", "x"],
                                      ["timeline", "task", "zz"], ["timeline", "pg", "AQ=="]]))  # fmt: skip
    environ = {
        env: draw(_pool_for(dest, paths))
        for env, dest in draw(st.lists(st.sampled_from(ENV_SETTINGS), max_size=4, unique=True))
    }
    return argv, environ


class _OneSigterm:
    """What the real signal receiver would give after a while: SIGTERM, once."""

    def __aiter__(self) -> _OneSigterm:
        return self

    async def __anext__(self) -> int:
        await trio.lowlevel.checkpoint()
        return signal.SIGTERM


@contextmanager
def _immediate_sigterm(*signums: int) -> Iterator[_OneSigterm]:
    yield _OneSigterm()


_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
_ONE_SENTENCE = re.compile(r"^trio-events [\w-]+: error: \S.*\.$")


def run_main(argv: list[str], environ: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        for env, _ in ENV_SETTINGS:
            mp.delenv(env, raising=False)
        mp.setenv("TRIO_FUZZ_TOKEN", "s3cret")
        mp.setenv("TRIO_FUZZ_EMPTY", "")
        mp.delenv("TRIO_FUZZ_UNSET", raising=False)
        for name, value in environ.items():
            mp.setenv(name, value)
        mp.setattr(trio, "open_signal_receiver", _immediate_sigterm)
        mp.setattr(_loadgen, "realistic_events", lambda *a, **k: iter(()))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = _cli.main(argv)
            except SystemExit as exc:  # --help only: every error is a return value
                code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _path_pool(tmp_path_factory.mktemp("fuzz-cli"))


@FUZZ
@given(data=st.data())
def test_invalid_configuration_is_one_sentence(
    paths: list[str], tally: Tally, data: st.DataObject
) -> None:
    argv, environ = data.draw(invocations(paths))
    cwd = Path(paths[1]).parent / "cwd"
    cwd.mkdir(exist_ok=True)
    code, out, err = run_main(argv, environ, cwd)
    assert "Traceback" not in err, (argv, environ, err)
    assert code in (0, 1, 2), (argv, environ, code, err)
    if code == 0:
        tally.add("cli: flags and environment", f"{argv[0]}: started and stopped")
        if argv[0] == "agent":
            assert "trio-events agent: stopped: delivered=0 dropped=0 abandoned=0" in out
        return
    # Leave out log records: one sentence must remain, with no usage block before it.
    lines = [line for line in err.splitlines() if line.strip() and not _LOG_RECORD.match(line)]
    assert len(lines) == 1, (argv, environ, err)
    assert _ONE_SENTENCE.match(lines[0]), (argv, environ, err)
    assert len(lines[0]) > 20, lines  # a sentence, not a bare word
    tally.add("cli: flags and environment", f"{argv[0]}: exit {code}")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["--listen", "127.0.0.1:{busy}"],
            1,
            r"^trio-events agent: error: cannot start: the gRPC address 127\.0\.0\.1:\d+ cannot "
            r"be served \(Address already in use\)\.$",
        ),
        (
            ["--metrics-listen", "127.0.0.1:{busy}"],
            1,
            r"^trio-events agent: error: cannot start: the metrics address 127\.0\.0\.1:\d+ "
            r"cannot be served \(Address already in use\)\.$",
        ),
        (
            ["--db", "{tmp}/no/such/dir/events.db"],
            1,
            r"^trio-events agent: error: cannot start: the local store .*/no/such/dir/events\.db "
            r"cannot be opened \(unable to open database file\)\.$",
        ),
        (
            ["--export-addr", "https://127.0.0.1:9/", "--ca-bundle", "{tmp}/garbage.pem"],
            2,
            r"^trio-events agent: error: The CA bundle '.*garbage\.pem' cannot be loaded \(.*\); give a readable PEM file of CA certificates\.$",
        ),
    ],
    ids=["grpc-port-in-use", "metrics-port-in-use", "db-cannot-be-opened", "ca-bundle-not-pem"],
)
def test_agent_start_up_failure_is_one_sentence(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    """Regression: these failed inside the service's nursery and left as a traceback."""
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [a.format(busy=port, tmp=tmp_path) for a in args]
        if "--listen" not in argv:
            argv += ["--listen", "127.0.0.1:0"]
        if "--metrics-listen" not in argv:
            argv += ["--metrics-listen", "off"]
        done = subprocess.run(
            command("agent", *argv),
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env(),
        )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if not _LOG_RECORD.match(line)]
    assert (done.returncode, len(lines)) == (code, 1), done.stderr
    assert re.match(message, lines[0]), lines[0]


# --- the config file ----------------------------------------------------------------------------

_TOML_VALUES = st.one_of(
    st.sampled_from(['""', "0", "-1", "3", "1.5", "-0.5", "nan", "inf", "true", "false", "[]"]),
    st.sampled_from(['"ALL"', '["TASK_DEFINITION_EVENT"]', '["X", 1]', '{ "X-A" = "b" }', "{}"]),
    st.sampled_from(['"127.0.0.1:0"', '"off"', '"http://127.0.0.1:9/"', '"reject"', '"zstd"']),
    text.map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
_TABLES = ["agent", "collect", "query", "loadgen", "demo", "agents", "[agent.destination]"]


@st.composite
def config_files(draw: st.DrawFn) -> str:
    lines = []
    keys = [s.key for c in _tables.COMMANDS for s in c.settings] + ["url", "name", "bufer_size"]
    if draw(st.booleans()):
        lines.append(f"log_level = {draw(_TOML_VALUES)}")
    for table in draw(st.lists(st.sampled_from(_TABLES), max_size=3)):
        lines.append(f"[{table}]")
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            lines.append(f"{key} = {draw(_TOML_VALUES)}")
    if draw(st.booleans()):
        lines.append(draw(text))  # sometimes not TOML at all
    return "\n".join(lines) + "\n"


@FUZZ
@given(data=st.data())
def test_an_invalid_config_file_is_one_sentence(
    paths: list[str], tally: Tally, data: st.DataObject
) -> None:
    """Whatever the file holds, resolving the agent's settings succeeds or says one sentence."""
    from trio_events._cli._agent import service_config_from_args

    content = data.draw(config_files())
    path = Path(paths[1]).parent / "fuzz.toml"
    path.write_text(content)
    try:
        args = _cli.parse(["agent", "--config", str(path)], {})
        service_config_from_args(args, {})
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message.strip() or "not valid TOML" in message, message
        assert len(message) > 20, message
        tally.add("cli: config files", "refused")
        return
    tally.add("cli: config files", "accepted")
