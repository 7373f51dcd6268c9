"""Shared dashboard widgets: braille curves, bars, device strip, previews, the polling panel base."""
