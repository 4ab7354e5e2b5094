"""The one exception type for mistakes a user can fix (bad config, bad data, bad request), and the argparse
parser that raises it for usage mistakes."""

from __future__ import annotations

import argparse
from typing import NoReturn


class PipelineError(ValueError):
    """A user-facing error: the CLI prints its message on one line and exits with status 2.

    Messages say what was wrong and what to do about it.
    """


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage mistakes become one-line PipelineErrors (exit 2, nothing written) instead of
    usage text + exit."""

    def error(self, message: str) -> NoReturn:
        """Raise the mistake as a PipelineError pointing at ``--help``."""
        raise PipelineError(f"{message} (see {self.prog} --help)")
