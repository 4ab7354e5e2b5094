"""The training CLI: LightningCLI over ScaledClassifier and ShardDataModule (``pipeline fit|validate|test|predict``).

Beyond plain LightningCLI this adds the ``run.*`` keys (run directory, sweep, name), derives the data
resolution from the scaling spec, validates the whole config before any process group starts, and
gives every run its loggers (W&B offline + CSV), atomic checkpoints (last + best) and result record.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities import rank_zero_only

from pipeline.atomic import atomic_write_text
from pipeline.data.datamodule import ShardDataModule
from pipeline.errors import PipelineError
from pipeline.scaling import ScaleSpec
from pipeline.scaling.spec import SPEC_KEYS, resolve_spec
from pipeline.training.callbacks import RunSummary
from pipeline.training.checkpoint import AtomicCheckpointIO
from pipeline.training.checks import (
    HeldLogs,
    check_batches,
    check_checkpoint,
    check_ckpt_path,
    check_loop,
    check_monitor,
    check_recipe,
)
from pipeline.training.finetune import check_source
from pipeline.training.guards import NonFiniteError, NonFiniteGuard
from pipeline.training.loggers import build_loggers
from pipeline.training.module import ScaledClassifier
from pipeline.training.precise_bn import PreciseBN
from pipeline.training.recipe import Recipe
from pipeline.training.requeue import RequeueOnSignal
from pipeline.training.result import git_commit, reported, write_result
from pipeline.training.rundir import (
    BEST,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LAST,
    SINGLE,
    RunOptions,
    check_run_dir,
    run_dir,
    wandb_run_id,
)
from pipeline.training.syncbn import check_sync_batchnorm, layer_sync_plugins

log = logging.getLogger(__name__)


def spec_resolution(*values: Any) -> int:
    """The input resolution of the spec given by the model's SPEC_KEYS values (the data link's compute_fn)."""
    return resolve_spec(**dict(zip(SPEC_KEYS, values, strict=True))).resolution


def training_complete(trainer: Any) -> bool:
    """True when fit ended by reaching max_steps or max_epochs (not by a requeue signal or an interrupt)."""
    if trainer.state.status != TrainerStatus.FINISHED:
        return False
    if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    epochs_done = trainer.fit_loop.epoch_progress.current.completed
    return trainer.max_epochs is not None and trainer.max_epochs > 0 and epochs_done >= trainer.max_epochs


def checkpoint_callbacks(dirpath: Path, monitor: str, every_min: float) -> list[ModelCheckpoint]:
    """``last.ckpt`` after every epoch (first: it is ``trainer.checkpoint_callback``), ``best.ckpt`` by ``monitor``,
    and ``last.ckpt`` again every ``every_min`` minutes of training (none when 0).

    Separate callbacks because Lightning 2.6's ``save_last=True`` only refreshes last.ckpt in epochs where
    the monitored metric improved, which would resume from a stale epoch, and one ModelCheckpoint takes
    either epochs or a time interval. The time check is broadcast from rank 0, so every rank saves at the
    same step; the saved loader state makes the resume exact mid-epoch.
    """
    callbacks = [
        ModelCheckpoint(dirpath=dirpath, filename=LAST, monitor=None, save_top_k=1, enable_version_counter=False),
        ModelCheckpoint(dirpath=dirpath, filename=BEST, monitor=monitor, mode="max", save_top_k=1,
                        enable_version_counter=False),
    ]
    if every_min > 0:
        callbacks.append(ModelCheckpoint(dirpath=dirpath, filename=LAST, monitor=None, save_top_k=1,
                                         enable_version_counter=False,
                                         train_time_interval=timedelta(minutes=every_min)))
    return callbacks


class RunConfig(SaveConfigCallback):
    """Writes a fit's resolved config to ``<run dir>/config.yaml`` atomically (validate/test leave it alone).

    The CLI has already checked that any config.yaml there describes the same run (``check_run_dir``).
    """

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Rank 0, at fit's setup: write the config (temp file + rename, as every file that matters)."""
        if stage == "fit":
            path = Path(trainer.default_root_dir) / CONFIG_FILE
            atomic_write_text(path, self.parser.dump(self.config, skip_none=False))


def _one_line(err: BaseException) -> str:
    """jsonargparse errors span lines and wrap a link's error in its call; the CLI prints the cause, one line."""
    text = re.sub(r"\s+", " ", str(err)).strip()
    return text.rsplit(" failed: ", 1)[-1] if text.startswith("Call to compute_fn") else text


class PipelineCLI(LightningCLI):
    """LightningCLI with run directories, spec-derived links, early validation, loggers and result records."""

    spec: ScaleSpec
    options: RunOptions
    directory: Path
    summary: RunSummary

    def __init__(self, *args: Any, held_logs: HeldLogs | None = None, **kwargs: Any) -> None:
        self.held_logs = held_logs  # Lightning's log lines, let out once the run directory is made
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``run.*`` and link data ↔ model: classes to the model, resolution (from the spec) to the data."""
        parser.add_class_arguments(RunOptions, "run")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments(tuple(f"model.{k}" for k in SPEC_KEYS), "data.resolution",
                              compute_fn=spec_resolution, apply_on="parse")

    def _parse_ckpt_path(self) -> None:
        """Refuse an unsafe or unreadable checkpoint in one line before LightningCLI reads its hyper-parameters."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).is_file():
            check_checkpoint(Path(path))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """Resolve the spec and the run directory; every check here runs before any process group exists."""
        self.started = time.time()
        config = self.config[self.subcommand]
        self.spec = resolve_spec(**{k: config.model[k] for k in SPEC_KEYS})
        self.options = RunOptions(**config.run)
        if self.subcommand == "fit":  # the layer sync applies only while fitting
            check_sync_batchnorm(config.trainer.sync_batchnorm, config.trainer.accelerator)
        self.directory = run_dir(self.options, self.spec)
        self.check_config(config)
        if not config.get("ckpt_path"):  # a resumed / evaluated checkpoint restores every weight itself
            check_source(config.model)
        config.trainer.default_root_dir = str(self.directory)

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a run given ``ckpt_path`` never reads its ``model.init_from`` source.

        The checkpoint restores every weight, and the source may be gone by then; ``init_from`` stays in the
        config (and config.yaml), so a resumed transfer run is the same run as the one that started.
        """
        model = self.config[self.subcommand].model
        given = model.get("init_from")
        if self.config[self.subcommand].get("ckpt_path"):
            model.init_from = None
        try:
            super().instantiate_classes()
        finally:
            model.init_from = given

    def check_config(self, config: Any) -> None:
        """The checks of :mod:`pipeline.training.checks` and, for fit, that the run directory is this run's."""
        check_loop(config.trainer, self.subcommand)
        recipe = Recipe(**(config.model.recipe or {}))  # None: the module's default Recipe()
        check_recipe(recipe)
        check_monitor(self.options.monitor, recipe)
        check_ckpt_path(config.ckpt_path, self.directory / CHECKPOINT_DIR)
        if self.subcommand == "fit":
            resolved = yaml.safe_load(self._parser(self.subcommand).dump(config, skip_none=False))
            check_run_dir(self.directory, resolved, config.ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The configured Trainer plus this run's loggers, checkpointing, summary and (SLURM) requeue handling."""
        config = self.config[self.subcommand]
        dataset = self.options.dataset or Path(str(config.data.root)).name
        name, group = self.directory.name, self.options.sweep or SINGLE
        self.summary = RunSummary(dataset=dataset, extra={"run_name": name, "sweep": group})
        trainer_config = self.config_init[self.subcommand].trainer
        self.precise_bn = PreciseBN(self.options.precise_bn_samples)  # first: the evaluations see its statistics
        checkpoints = checkpoint_callbacks(self.directory / CHECKPOINT_DIR, self.options.monitor,
                                           self.options.checkpoint_every_min)
        trainer_config.callbacks = [*(trainer_config.callbacks or []), self.precise_bn, *checkpoints, self.summary,
                                    NonFiniteGuard(), *([RequeueOnSignal()] if "SLURM_JOB_ID" in os.environ else [])]
        plugins = trainer_config.plugins or []
        plugins = [*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO(),
                   *layer_sync_plugins(config.trainer.sync_batchnorm)]
        if SLURMEnvironment.detect():
            # our requeue callback checkpoints outside the signal handler; Lightning's own would race it
            plugins.append(SLURMEnvironment(auto_requeue=False))
        try:  # built before the run directory: what the Trainer refuses leaves nothing behind
            trainer = super().instantiate_trainer(logger=False, plugins=plugins, **kwargs)
        except (MisconfigurationException, ValueError) as err:
            raise PipelineError(_one_line(err)) from None
        check_batches(self.datamodule, trainer.world_size, self.subcommand)
        if self.subcommand != "predict":  # predict writes a file and logs nothing: no second W&B run
            run_id = wandb_run_id(self.directory, create=rank_zero_only.rank == 0)
            trainer.loggers = build_loggers(self.directory, name, group, self.options.project, run_id)
        if self.held_logs is not None:
            self.held_logs.release()
        return trainer

    def after_fit(self) -> None:
        """After a completed fit: every rank evaluates the selected checkpoint on the reported split; then rank 0
        writes the W&B summary, finishes the W&B run and writes result.json (last)."""
        trainer = self.trainer
        if not training_complete(trainer):
            return
        # before the test: loading best.ckpt sets the module's counters (skipped samples) back to that epoch's
        summary = self.summary.summary(trainer, self.model) if trainer.is_global_zero else {}
        report = self.report_selected()
        if not trainer.is_global_zero:
            return
        summary.update(report)
        wandb = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        run_id = None
        if wandb is not None:
            wandb.experiment.summary.update(summary)
            run_id = wandb.experiment.id
            wandb.experiment.finish()
        spec = self.spec.record()
        record = {
            **{k: spec[k] for k in ("strategy", "phi", "s", "alpha", "beta", "gamma", "fast_alpha",
                                    "d", "w", "r", "resolution")},
            **summary,
            "run_name": self.directory.name, "sweep": self.options.sweep or SINGLE, "run_dir": str(self.directory),
            "dataset": self.summary.dataset, "source_run": self.options.source_run, "spec_name": spec["name"],
            "base": spec["base"], "wall_time_s": time.time() - self.started, "wandb_run_id": run_id,
            "git_commit": git_commit(Path(__file__).parent),
            "precise_bn_samples": self.precise_bn.last_samples,  # images used (all ranks); 0 = off
        }
        write_result(self.directory, record)

    def report_selected(self) -> dict[str, Any]:
        """Evaluate best.ckpt (selected by ``run.monitor`` on ``data.val_split``) once on ``data.test_split``, raw
        and EMA weights, on every rank (``trainer.test``: exact over ranks, precise BN as a separate ``pipeline
        test`` of that checkpoint); the record's reported accuracies, split names, image counts and checkpoint.

        A fit that never validated (``limit_val_batches 0``, or ``max_steps`` reached before the first validation)
        selected nothing: its final weights are reported, ``selected_on`` and ``reported_checkpoint`` are None."""
        datamodule = self.datamodule
        selected_on, reported_on = datamodule.splits["val"], datamodule.splits["test"]
        best = self.directory / CHECKPOINT_DIR / f"{BEST}.ckpt"
        selected = best.is_file()  # the same on every rank: one file system, written before fit returned
        if self.trainer.is_global_zero and not selected:
            log.warning("no validation ran, so no checkpoint was selected on %r: reporting the final weights on %r",
                        selected_on, reported_on)
        elif self.trainer.is_global_zero and selected_on == reported_on:
            log.warning("data.val_split and data.test_split are both %r: the reported accuracy is that of the "
                        "checkpoint selected on it (optimistic); hold out a split to select on (pipeline shards … "
                        "--holdout N)", reported_on)
        metrics = self.trainer.test(self.model, datamodule=datamodule, ckpt_path=str(best) if selected else None,
                                    verbose=False)[0]
        return {**reported(metrics), "selected_on": selected_on if selected else None, "reported_on": reported_on,
                "val_images": datamodule.manifest.split(selected_on).count,
                "test_images": datamodule.manifest.split(reported_on).count,
                "reported_checkpoint": str(best) if selected else None}


def run_cli(argv: list[str], cli_class: type[PipelineCLI] = PipelineCLI) -> int:
    """Run ``argv`` = [fit|validate|test, options…]; config mistakes raise PipelineError (one line, exit 2).

    ``cli_class`` lets the config tests parse with this exact setup and stop before the classes exist.
    """
    # argv is the command line itself (the dispatcher passes it on), not a second set of arguments
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    held = HeldLogs()  # a refusal is then the only line printed
    try:
        cli_class(
            ScaledClassifier, ShardDataModule,
            args=argv,
            seed_everything_default=0,
            trainer_defaults={"use_distributed_sampler": False},
            save_config_callback=RunConfig,
            save_config_kwargs={"save_to_log_dir": False},
            parser_kwargs={"exit_on_error": False, **{cmd: {"exit_on_error": False}
                                                       for cmd in ("fit", "validate", "test", "predict")}},
            auto_configure_optimizers=False,
            held_logs=held,
        )
    except ArgumentError as err:
        held.drop()
        raise PipelineError(_one_line(err)) from None
    except NonFiniteError:
        if rank_zero_only.rank != 0:
            return 1  # every rank stops at the same step; rank 0 alone says so
        raise
    except PipelineError:
        held.drop()
        raise
    finally:
        held.release()
    return 0
