"""The ``ngrad`` command: list, train, compare, tune, check, and the analyses of trained runs.

One module per command (``listing``, ``train``, ``compare``, ``tune``, ``check``, ``inspect``,
``similarity``), each with its flags and the function that runs it; :mod:`ngrad.cli.parser` builds
the parser and turns every failure a user can cause into one line ``ngrad: error: ...`` with exit
code 2 (usage) or 1 (run failure).
"""

import sys

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run ``ngrad`` (:func:`ngrad.cli.parser.main`); returns the exit code. The parser is imported
    in here, so a Ctrl-C while ngrad is still starting up also ends in one line (exit code 130)."""
    try:
        from ngrad.cli.parser import main as run

        return run(argv)
    except KeyboardInterrupt:
        print("ngrad: interrupted", file=sys.stderr)
        return 130


def __getattr__(name: str):  # build_parser, imported on first use
    if name == "build_parser":
        from ngrad.cli.parser import build_parser

        return build_parser
    raise AttributeError(f"module 'ngrad.cli' has no attribute {name!r}")
