"""SQLite store: the one shared state between the dashboard, the CLI and the workers.

All SQL of the project lives in this package. Nothing here imports the rest of pocketops.
"""
from store.db import connect, now, transaction

__all__ = ["connect", "now", "transaction"]
