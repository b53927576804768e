"""The public strategies (trio_events.testing.strategies) against the real agent process:
valid requests are accepted, each kind of hostile request gets the answer it calls for."""

from __future__ import annotations

from hypothesis import given, settings

from tests.fuzz.conftest import FUZZ, FUZZ_FEW, MAX_MESSAGE_BYTES, Pipeline, Tally
from tests.fuzz.test_fuzz_grpc import attack
from trio_events import pb
from trio_events.testing.strategies import Hostile, add_events_requests, hostile_add_events_requests

EXPECTED = {
    "unknown_fields": {"OK"},  # a newer Ray's fields pass through
    "invalid_utf8": {"INVALID_ARGUMENT"},
    "oversized": {"RESOURCE_EXHAUSTED"},
    # A cut at a field boundary, or random bytes, may still parse.
    "truncated": {"OK", "INVALID_ARGUMENT"},
    "garbage": {"OK", "INVALID_ARGUMENT"},
}


@FUZZ
@given(request=add_events_requests(max_events=5))
def test_valid_requests_are_accepted(
    pipeline: Pipeline, tally: Tally, request: pb.AddEventsRequest
) -> None:
    assert attack(pipeline, tally, "grpc-toolkit-valid", request.SerializeToString()) == "OK"


@settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 2))
@given(
    hostile=hostile_add_events_requests(
        kinds=("unknown_fields", "invalid_utf8", "truncated", "garbage")
    )
)
def test_hostile_requests_get_the_answer_their_damage_calls_for(
    pipeline: Pipeline, tally: Tally, hostile: Hostile
) -> None:
    outcome = attack(pipeline, tally, "grpc-toolkit-hostile", hostile.data)
    assert outcome in EXPECTED[hostile.kind], (hostile.kind, outcome)


@FUZZ_FEW
@given(hostile=hostile_add_events_requests(kinds=("oversized",), oversized_bytes=MAX_MESSAGE_BYTES))
def test_oversized_requests_are_refused(pipeline: Pipeline, tally: Tally, hostile: Hostile) -> None:
    assert attack(pipeline, tally, "grpc-toolkit-oversized", hostile.data) == "RESOURCE_EXHAUSTED"
