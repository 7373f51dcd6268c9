"""Where pocketops keeps its database and files.

``--db PATH`` picks the database file; otherwise ``$POCKETOPS_HOME/pocketops.db``; otherwise
the platform's user data directory. Files (datasets' arrays, checkpoints, ONNX variants,
bundles) live in ``<db stem>-files/`` beside the database, so one database and its files move
together.
"""
from __future__ import annotations

import os
from pathlib import Path

DB_NAME = "pocketops.db"


def home() -> Path:
    """The data directory: ``$POCKETOPS_HOME``, else the platform's user data directory."""
    env = os.environ.get("POCKETOPS_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("pocketops", appauthor=False))


def db_path(explicit: str | os.PathLike | None = None) -> Path:
    """The database file: ``explicit`` (``--db``) if given, else ``pocketops.db`` in :func:`home`."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    return (home() / DB_NAME).resolve()


def files_dir(db: str | os.PathLike) -> Path:
    """The directory that holds the artifacts belonging to database ``db``."""
    db = Path(db)
    return db.parent / f"{db.stem}-files"


def artifact_dir(db: str | os.PathLike, *parts: str | int) -> Path:
    """A sub-directory of the files directory, created on demand (e.g. ``runs/12``)."""
    path = files_dir(db).joinpath(*(str(p) for p in parts))
    path.mkdir(parents=True, exist_ok=True)
    return path
