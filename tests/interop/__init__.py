"""A real Ray 2.60 cluster and trio-events talking to each other (``nox -s interop``)."""
