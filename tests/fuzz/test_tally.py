"""The fuzz session's tally is printed, not only written to a JSON file."""

from __future__ import annotations

from tests.fuzz.conftest import Tally, format_tally


def test_the_tally_reads_as_lines() -> None:
    tally = Tally()
    tally.add("grpc: AddEvents", "INVALID_ARGUMENT")
    tally.add("grpc: AddEvents", "INVALID_ARGUMENT")
    tally.add("grpc: AddEvents", "ok")
    tally.add("cli: flags and environment", "agent: exit 2")
    summary = {**tally.summary(), "crashes": 0}
    lines = format_tally(summary)
    assert lines[0].endswith(": 4 inputs tried, 0 crashes")
    assert lines[1:] == [
        "  cli: flags and environment: 1 (agent: exit 2 1)",
        "  grpc: AddEvents: 3 (INVALID_ARGUMENT 2, ok 1)",
    ]
