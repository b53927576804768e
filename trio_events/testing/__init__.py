"""Testing tools for code that sends or receives Ray events (``pip install trio-events[testing]``).

- :mod:`trio_events.testing.strategies`: hypothesis strategies (imported separately: it needs
  hypothesis).
- Fakes: :class:`CapturingReceiver` (an HTTP receiver that captures batches and fails on
  demand), :func:`start_test_agent` and :func:`open_test_recorder`.
- A pytest plugin, loaded automatically once trio-events is installed, with the fixtures
  ``trio_events_receiver``, ``trio_events_agent`` and ``trio_events_recorder``.

See docs/testing.md.
"""

from __future__ import annotations

from trio_events.testing._fixtures import TEST_NODE_ID as TEST_NODE_ID
from trio_events.testing._fixtures import TestAgent as TestAgent
from trio_events.testing._fixtures import open_test_recorder as open_test_recorder
from trio_events.testing._fixtures import start_test_agent as start_test_agent
from trio_events.testing._receiver import CapturedRequest as CapturedRequest
from trio_events.testing._receiver import CapturingReceiver as CapturingReceiver
from trio_events.testing._receiver import Reply as Reply

__all__ = [
    "TEST_NODE_ID",
    "CapturedRequest",
    "CapturingReceiver",
    "Reply",
    "TestAgent",
    "open_test_recorder",
    "start_test_agent",
]
