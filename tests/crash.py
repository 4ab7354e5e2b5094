"""Fault injection for tests: a training callback that kills its own process at a global step.

``--trainer.callbacks+=tests.crash.CrashAt`` is part of the config of every attempt (so a resume's stored
config is unchanged); the environment decides whether and where it strikes: ``CRASH_AT_STEP`` (the global
step after which to die), ``CRASH_RANK`` (default 0) and ``CRASH_ONCE_FILE`` (if set, it strikes only while
that file does not exist, and creates it first: a crash that a retry does not repeat).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from pytorch_lightning import Callback


class CrashAt(Callback):
    """SIGKILL this process after the training batch that reaches ``$CRASH_AT_STEP`` on rank ``$CRASH_RANK``."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step, rank = os.environ.get("CRASH_AT_STEP"), int(os.environ.get("CRASH_RANK", 0))
        if step is None or trainer.global_step != int(step) or trainer.global_rank != rank:
            return
        once = os.environ.get("CRASH_ONCE_FILE")
        if once:
            if Path(once).exists():
                return
            Path(once).touch()
        os.kill(os.getpid(), signal.SIGKILL)
