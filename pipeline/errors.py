"""The one exception type for mistakes a user can fix (bad config, bad data, bad request)."""

from __future__ import annotations


class PipelineError(ValueError):
    """A user-facing error: the CLI prints its message on one line and exits with status 2.

    Messages say what was wrong and what to do about it.
    """


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name if it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def message_line(err: PipelineError) -> str:
    """The message of a user-facing error as the CLI prints it: one line.

    A DataLoader worker's error reaches the main process re-raised by torch as ``Caught <type> in DataLoader
    worker process N.`` + the worker's traceback; its own message is the traceback's last line.
    """
    text = str(err).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        text = text.splitlines()[-1].partition(": ")[2] or text.splitlines()[-1]
    return text
