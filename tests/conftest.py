"""Shared fixtures: a fresh store in tmp_path (never the user's home)."""
from __future__ import annotations

import pytest

import store


@pytest.fixture
def db(tmp_path):
    """``(db, db_path)``: a migrated store in ``tmp_path``."""
    path = tmp_path / "t.db"
    return store.connect(path), path


@pytest.fixture
def digits_db(db):
    """``(db, db_path)`` with the built-in digits dataset registered."""
    from core.datasets import ensure_builtin

    ensure_builtin(*db)
    return db


@pytest.fixture(scope="session")
def ray_head():
    """A real local Ray head with token auth (tests/_ray_head.py), shared by the session's cluster tests."""
    import importlib.util
    import os

    from tests._ray_head import ray_executable, start_head

    if importlib.util.find_spec("ray") is None or ray_executable() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ray[default] is missing: `make test` installs the cluster extra")
        pytest.skip("ray[default] is not installed (pip install -e '.[cluster]')")
    head = start_head()
    print(f"\nray head: started in {head.start_s:.1f} s at {head.address}")
    try:
        yield head
    finally:
        print(f"\nray head: stopped in {head.stop():.1f} s")
