"""Fixtures shared across test modules: the PostgreSQL cluster (one per test session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import Cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return pg_cluster.new_database()
