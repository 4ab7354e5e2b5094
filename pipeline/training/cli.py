"""``pipeline fit|validate|test``: LightningCLI over ScaledClassifier and ShardDataModule.

Beyond plain LightningCLI this adds the ``run.*`` keys (run directory, sweep, name), derives the data
resolution from the scaling spec, validates the whole config before any process group starts, and
gives every run its loggers (W&B offline + CSV), atomic checkpoints (last + best) and result record.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities import rank_zero_only

from pipeline.data.datamodule import ShardDataModule
from pipeline.errors import PipelineError
from pipeline.experiments.results import git_commit, write_result
from pipeline.scaling import ScaleSpec
from pipeline.scaling.spec import SPEC_KEYS, resolve_spec
from pipeline.training.callbacks import RunSummary
from pipeline.training.checkpoint import AtomicCheckpointIO
from pipeline.training.finetune import check_source
from pipeline.training.loggers import build_loggers
from pipeline.training.module import ScaledClassifier
from pipeline.training.rundir import CHECKPOINT_DIR, SINGLE, RunOptions, run_dir, wandb_run_id

REQUEUE_MODULE = "pipeline.cluster.requeue"  # the SLURM engineer's requeue-on-signal callback


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


def checkpoint_callbacks(dirpath: Path, monitor: str) -> list[ModelCheckpoint]:
    """``last.ckpt`` after every epoch (first: it is ``trainer.checkpoint_callback``) and ``best.ckpt`` by ``monitor``.

    Two callbacks because Lightning 2.6's ``save_last=True`` only refreshes last.ckpt in epochs where
    the monitored metric improved, which would resume from a stale epoch.
    """
    return [
        ModelCheckpoint(dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False),
        ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode="max", save_top_k=1,
                        enable_version_counter=False),
    ]


def _requeue_callbacks() -> list[Callback]:
    """Under a SLURM batch job, the cluster package's requeue-on-signal callback (if that package has it)."""
    if "SLURM_JOB_ID" not in os.environ or importlib.util.find_spec(REQUEUE_MODULE) is None:
        return []
    return [importlib.import_module(REQUEUE_MODULE).RequeueOnSignal()]


class PipelineCLI(LightningCLI):
    """LightningCLI with run directories, spec-derived links, early validation, loggers and result records."""

    spec: ScaleSpec
    options: RunOptions
    directory: Path
    summary: RunSummary

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Add ``run.*`` and link data ↔ model: classes to the model, resolution (from the spec) to the data."""
        parser.add_class_arguments(RunOptions, "run")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments(tuple(f"model.{k}" for k in SPEC_KEYS), "data.resolution",
                              compute_fn=spec_resolution, apply_on="parse")

    def before_instantiate_classes(self) -> None:
        """Resolve the spec and the run directory; every check here runs before any process group exists."""
        self.started = time.time()
        config = self.config[self.subcommand]
        self.spec = resolve_spec(**{k: config.model[k] for k in SPEC_KEYS})
        if config.get("ckpt_path"):  # resuming / evaluating a checkpoint: it restores every weight itself
            config.model.init_from = None
        check_source(config.model)
        self.options = RunOptions(**config.run)
        self.directory = run_dir(self.options, self.spec)
        config.trainer.default_root_dir = str(self.directory)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The configured Trainer plus this run's loggers, checkpointing, summary and (SLURM) requeue handling."""
        config = self.config[self.subcommand]
        dataset = self.options.dataset or Path(str(config.data.root)).name
        name, group = self.directory.name, self.options.sweep or SINGLE
        run_id = wandb_run_id(self.directory, create=rank_zero_only.rank == 0)
        self.summary = RunSummary(dataset=dataset, extra={"run_name": name, "sweep": group})
        trainer_config = self.config_init[self.subcommand].trainer
        trainer_config.callbacks = [*(trainer_config.callbacks or []), *checkpoint_callbacks(
            self.directory / CHECKPOINT_DIR, self.options.monitor), self.summary, *_requeue_callbacks()]
        plugins = trainer_config.plugins or []
        plugins = [*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO()]
        if SLURMEnvironment.detect():
            # our requeue callback checkpoints outside the signal handler; Lightning's own would race it
            plugins.append(SLURMEnvironment(auto_requeue=False))
        # predict writes a file and logs nothing: no second W&B run in a finished run's directory
        loggers = [] if self.subcommand == "predict" else build_loggers(
            self.directory, name, group, self.options.project, run_id)
        return super().instantiate_trainer(logger=loggers, plugins=plugins, **kwargs)

    def after_fit(self) -> None:
        """On rank 0 of a completed fit: W&B summary, finish the W&B run, then write result.json (last)."""
        trainer = self.trainer
        if not trainer.is_global_zero or not training_complete(trainer):
            return
        summary = self.summary.summary(trainer, self.model)
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
        }
        write_result(self.directory, record)


def _one_line(err: BaseException) -> str:
    """jsonargparse errors span lines and wrap a link's error in its call; the CLI prints the cause, one line."""
    text = re.sub(r"\s+", " ", str(err)).strip()
    return text.rsplit(" failed: ", 1)[-1] if text.startswith("Call to compute_fn") else text


def main(argv: list[str]) -> int:
    """Run ``argv`` = [fit|validate|test, options…]; config mistakes raise PipelineError (one line, exit 2)."""
    # argv is the command line itself (the dispatcher passes it on), not a second set of arguments
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    try:
        PipelineCLI(
            ScaledClassifier, ShardDataModule,
            args=argv,
            seed_everything_default=0,
            trainer_defaults={"use_distributed_sampler": False},
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"exit_on_error": False, **{cmd: {"exit_on_error": False}
                                                       for cmd in ("fit", "validate", "test", "predict")}},
            auto_configure_optimizers=False,
        )
    except ArgumentError as err:
        raise PipelineError(_one_line(err)) from None
    return 0
