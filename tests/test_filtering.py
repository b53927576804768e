"""parse_exposable_event_types: Ray's EXPOSABLE_EVENT_TYPES syntax (ray-reference.md 3.1)."""

from __future__ import annotations

import re

import pytest

from trio_events import pb
from trio_events.agent._filtering import (
    DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES,
    parse_exposable_event_types,
)


@pytest.mark.parametrize("value", ["ALL", "all", "All", " ALL "])
def test_all_in_any_case_exposes_everything(value: str) -> None:
    assert parse_exposable_event_types(value) is None


def test_the_default_is_rays_twelve_types() -> None:
    parsed = parse_exposable_event_types(DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES)
    assert parsed is not None
    assert {pb.EVENT_TYPE_NAMES[n] for n in parsed} == {
        "TASK_DEFINITION_EVENT",
        "TASK_LIFECYCLE_EVENT",
        "ACTOR_TASK_DEFINITION_EVENT",
        "DRIVER_JOB_DEFINITION_EVENT",
        "DRIVER_JOB_LIFECYCLE_EVENT",
        "ACTOR_DEFINITION_EVENT",
        "ACTOR_LIFECYCLE_EVENT",
        "NODE_DEFINITION_EVENT",
        "NODE_LIFECYCLE_EVENT",
        "WORKER_DEFINITION_EVENT",
        "WORKER_LIFECYCLE_EVENT",
        "PLATFORM_EVENT",
    }
    assert DEFAULT_HTTP_EXPOSABLE_EVENT_TYPES.endswith(",")  # Ray's string, verbatim
    assert pb.RayEvent.TASK_PROFILE_EVENT not in parsed


def test_items_are_stripped_and_empty_items_dropped() -> None:
    parsed = parse_exposable_event_types(" TASK_PROFILE_EVENT , ,PLATFORM_EVENT,")
    assert parsed == frozenset({pb.RayEvent.TASK_PROFILE_EVENT, pb.RayEvent.PLATFORM_EVENT})


@pytest.mark.parametrize("value", ["", " ", ",,"])
def test_an_empty_list_exposes_nothing(value: str) -> None:
    assert parse_exposable_event_types(value) == frozenset()


def test_unknown_names_are_one_sentence_naming_them_and_the_valid_ones() -> None:
    valid = ", ".join(pb.EVENT_TYPE_NAMES[n] for n in sorted(pb.EVENT_TYPE_NAMES))
    message = (
        "Unknown event type name(s) TASK_EXECUTION_EVENT, task_definition_event: expected ALL "
        f"or a comma-separated list of {valid}."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        parse_exposable_event_types(
            "task_definition_event,TASK_EXECUTION_EVENT,NODE_LIFECYCLE_EVENT"
        )
