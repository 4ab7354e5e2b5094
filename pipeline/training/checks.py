"""Checks of a training config that must pass before any run directory, W&B run or process group exists.

Lightning and timm validate most values only when they use them, which is inside ``fit``: after the
run directory and the W&B run were made, on every rank, with a traceback. Each check here raises a
one-line :class:`PipelineError` instead. What the Trainer's own constructor refuses (devices,
strategy, precision, negative epochs/steps) is turned into one line by the CLI, which builds the
Trainer before anything of the run is created.
"""

from __future__ import annotations

import difflib
import logging
import warnings
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import Any

from timm.optim import list_optimizers
from torch import nn

from pipeline.errors import PipelineError
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.loggers import BEST_KEYS
from pipeline.training.recipe import Recipe, build_optimizer, build_scheduler
from pipeline.training.rundir import LAST


def check_loop(trainer: Any, subcommand: str) -> None:
    """Refuse loop lengths that train nothing or never end (the lr schedule needs a finite length)."""
    if subcommand != "fit":
        return
    epochs, steps = trainer.max_epochs, trainer.max_steps
    if epochs == 0 or steps == 0:
        raise PipelineError("trainer.max_epochs and trainer.max_steps must be ≥ 1 (or -1 for no limit); "
                            f"got max_epochs={epochs}, max_steps={steps}")
    if epochs == -1 and steps in (None, -1):
        raise PipelineError("trainer.max_epochs=-1 with no trainer.max_steps never ends and the lr schedule "
                            "needs a length: set one of them ≥ 1")
    limit = trainer.limit_train_batches
    if limit is not None and not float(limit) > 0:
        raise PipelineError(f"trainer.limit_train_batches must be > 0 (got {limit}); it would train nothing")
    for key in ("accumulate_grad_batches", "check_val_every_n_epoch"):
        value = getattr(trainer, key)
        if value is not None and int(value) < 1:
            raise PipelineError(f"trainer.{key} must be ≥ 1 (got {value})")
    if trainer.val_check_interval is not None and not float(trainer.val_check_interval) > 0:
        raise PipelineError(f"trainer.val_check_interval must be > 0 (got {trainer.val_check_interval})")
    if trainer.gradient_clip_val is not None and float(trainer.gradient_clip_val) < 0:
        # a negative norm would flip the gradients' sign in torch's clip_grad_norm_: gradient ascent
        raise PipelineError(f"trainer.gradient_clip_val must be ≥ 0 (got {trainer.gradient_clip_val}; 0 = off)")


def check_monitor(monitor: str, recipe: Recipe) -> None:
    """Refuse a ``run.monitor`` that the module does not log (best.ckpt keeps the maximum of an accuracy)."""
    keys = [k for k in BEST_KEYS if recipe.ema_epochs is not None or not k.endswith("_ema")]
    if monitor not in keys:
        raise PipelineError(f"run.monitor {monitor!r} is not an accuracy this run logs; use one of {', '.join(keys)}")


def check_recipe(recipe: Recipe) -> None:
    """Refuse a recipe whose values, optimizer or scheduler timm would refuse (built once on a 1-weight model).

    Building the real optimizer and schedule on a stand-in is the only complete check: the names, the
    ``opt_kwargs`` and the scheduler arguments are all validated by timm's own factories.
    """
    recipe.check()
    stand_in = nn.Linear(1, 1)
    try:
        optimizer = build_optimizer(stand_in, recipe, global_batch=1)
    except (ValueError, TypeError, KeyError) as err:
        names = list_optimizers()
        if recipe.opt.lower() not in names:
            near = difflib.get_close_matches(recipe.opt.lower(), names, n=3)
            hint = f"did you mean {', '.join(near)}?" if near else "see timm.optim.list_optimizers()"
            raise PipelineError(f"recipe.opt {recipe.opt!r} is not a timm optimizer; {hint}") from None
        raise PipelineError(f"recipe.opt {recipe.opt!r} with opt_kwargs {recipe.opt_kwargs}: {err}") from None
    try:
        build_scheduler(optimizer, recipe, epochs=1, updates_per_epoch=1)
    except (ValueError, TypeError, KeyError) as err:
        raise PipelineError(f"recipe.sched {recipe.sched!r}: {err} (timm's create_scheduler_v2 knows cosine, "
                            "tanh, step, multistep, plateau, poly, constant, wsd, rsqrt)") from None


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint that is missing or would not load with ``weights_only=True`` (pickled code).

    Memory-mapped, so even a large checkpoint costs only its pickle header here.
    """
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} does not exist (ckpt_path must be a file, or `last` to resume)")
    load_checkpoint(path, mmap=True)


def check_ckpt_path(ckpt_path: str | None, checkpoint_dir: Path) -> None:
    """Check the checkpoint a run starts from: a file, or ``last`` (this run's last.ckpt, if it has one)."""
    if ckpt_path is None:
        return
    if ckpt_path == "last":
        last = checkpoint_dir / f"{LAST}.ckpt"
        if last.is_file():
            check_checkpoint(last)
        return
    if ckpt_path in ("best", "hpc", "registry"):
        raise PipelineError(f"ckpt_path {ckpt_path!r} is not supported here; give a checkpoint file or `last`")
    check_checkpoint(Path(ckpt_path))


def check_batches(datamodule: Any, world_size: int, subcommand: str) -> None:
    """Refuse batch sizes that leave some rank without a batch of a split this subcommand reads.

    Every rank's loader is built here, on the one process that exists before any process group, with
    the world size the Trainer will have; the data module raises the PipelineError that says which. A fit
    reads the test split too: its selected checkpoint is evaluated there once at the end.
    """
    if subcommand == "fit" and datamodule.splits["test"] is None:
        raise PipelineError("a fit reports its selected checkpoint on data.test_split: set it (to data.val_split "
                            "where the data has no other held-out split)")
    roles = {"fit": ("train", "val", "test"), "validate": ("val",), "test": ("test",),
             "predict": ("test",)}.get(subcommand, ())
    for role in roles:
        if datamodule.splits[role] is None:
            continue
        datamodule.check((role,))
        for rank in range(world_size):
            try:
                datamodule.loader(role, world=(rank, world_size))
            except PipelineError:
                raise
            except (KeyError, AssertionError, ValueError) as err:  # timm's transform factory refusing a value
                raise PipelineError(
                    f"timm refuses the {role} transform (data.interpolation {datamodule.interpolation!r}, "
                    f"data.auto_augment {datamodule.auto_augment!r}, data.scale, data.hflip, data.color_jitter): "
                    f"{type(err).__name__}: {err}") from None


class HeldLogs:
    """Holds Lightning's log records (seed, devices, tips) and Python warnings until the checks have passed,
    then lets them out.

    A refusal is then the only line a bad config prints; a run that passes prints the same lines as before.
    """

    LOGGERS = ("lightning_fabric", "pytorch_lightning")

    def __init__(self) -> None:
        self.buffer = BufferingHandler(capacity=10_000)
        self.saved = {}
        self.warnings: list[tuple[Any, ...]] = []
        self.showwarning = warnings.showwarning
        warnings.showwarning = lambda *args: self.warnings.append(args)
        for name in self.LOGGERS:
            logger = logging.getLogger(name)
            self.saved[name] = (logger.handlers[:], logger.propagate)
            logger.handlers, logger.propagate = [self.buffer], False

    def release(self) -> None:
        """Restore the loggers and emit what they held, in order (idempotent)."""
        if not self.saved:
            return
        warnings.showwarning = self.showwarning
        for args in self.warnings:
            warnings.showwarning(*args)
        self.warnings = []
        for name, (handlers, propagate) in self.saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
        self.saved = {}
        for record in self.buffer.buffer:
            logging.getLogger(record.name).handle(record)
        self.buffer.flush()

    def drop(self) -> None:
        """Restore the loggers and forget what they held (the run was refused)."""
        self.buffer.flush()
        self.warnings = []
        self.release()
