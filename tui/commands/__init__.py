"""Headless commands: one module each, discovered by ``tui.cli``. None of them imports Textual."""
