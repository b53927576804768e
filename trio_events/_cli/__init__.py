"""The command line: the one place that reads the environment, one module per command."""

from __future__ import annotations

from trio_events._cli._main import main as main

__all__ = ["main"]
