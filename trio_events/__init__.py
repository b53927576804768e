"""trio-events: Ray's event export pipeline on trio."""

from __future__ import annotations

__version__ = "0.1.0"
