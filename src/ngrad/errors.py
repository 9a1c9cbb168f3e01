"""Exceptions that carry a message fit to show a user as is (the CLI prints them, no traceback)."""

from __future__ import annotations

__all__ = ["ConfigError", "DivergenceError", "NgradError"]


class NgradError(Exception):
    """Base class for errors whose message names the problem."""


class ConfigError(NgradError, ValueError):
    """A bad option, key or value (exit code 2 in the CLI)."""


class DivergenceError(NgradError, RuntimeError):
    """Training produced a non-finite loss or update (exit code 1 in the CLI)."""
