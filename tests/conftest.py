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
