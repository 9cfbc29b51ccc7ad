"""The project's error for bad input.

`BadInput` is what tinytrain raises when a file, a flag or an argument is wrong: a one-line message that says
what to change. The `tinytrain` command prints it and exits 2; any other exception is a bug in tinytrain and
reads as one (exit 1, `--debug` for the traceback). It is a ValueError, so Python callers that catch
ValueError keep working.
"""
from __future__ import annotations


class BadInput(ValueError):
    """Bad input, described in one line that says what to change."""
