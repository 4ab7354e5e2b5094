"""``pipeline submit``: check a SLURM request against its config, then ``sbatch`` it and print the job id.

One run::

    pipeline submit --config configs/x.yaml --nodes 2 --gpus-per-node 4 [-- pipeline fit overrides…]

A run whose job ended (failed, timed out, cancelled, node lost), in the same directory and W&B run::

    pipeline submit --resume runs/<sweep>/<run> --nodes 2 --gpus-per-node 4

A run manifest as a job array (only runs without ``result.json``, at most K at once)::

    pipeline submit --manifest runs/sweep/run_manifest.json --max-parallel 4 [-- overrides for every run…]

Every check runs before ``sbatch`` (and again inside the job): the config parses through the training
CLI, one task per GPU, the shards are visible, enough CPUs per task for the loader workers
(``--cpus-per-task`` defaults to ``data.num_workers`` + 1), ``scontrol`` exists when requeue is on.
``--dry-run`` prints the ``sbatch`` command instead of running it (it needs no SLURM command here).
"""

from __future__ import annotations

import argparse
import os

from pipeline.cluster.launch import DEFAULT_MAX_RETRIES
from pipeline.cluster.submit import SETUP_ENV, submit
from pipeline.preemption import SIGNAL_ENV

DESCRIPTION = __doc__.split("\n\n")[0]


def build_parser() -> argparse.ArgumentParser:
    """The ``pipeline submit`` options; overrides for ``pipeline fit`` follow a ``--``."""
    p = argparse.ArgumentParser(
        prog="pipeline submit", description=DESCRIPTION,
        usage="pipeline submit (--config CFG | --manifest FILE | --resume RUN_DIR) [options] "
              "[-- pipeline fit overrides…]",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="training config: one run through slurm/train.sbatch")
    what.add_argument("--manifest", help="run manifest (JSON): a job array through slurm/array.sbatch")
    what.add_argument("--resume", metavar="RUN_DIR",
                      help="continue a run whose job ended (failed, timed out, cancelled, node lost): its stored "
                           "config, the same run directory and W&B run, from its last.ckpt")
    p.add_argument("--nodes", type=int, default=1, help="nodes per run (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node; 0 = CPU-only (gloo)")
    p.add_argument("--ntasks-per-node", type=int, help="tasks per node (default: one per GPU, or 1 on CPU)")
    p.add_argument("--cpus-per-task", type=int,
                   help="CPUs per task (also the tasks' OMP_NUM_THREADS; default and minimum: data.num_workers + 1)")
    p.add_argument("--time", help="time limit, e.g. 04:00:00")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--job-name", help="job name (default: the run name or the manifest's name)")
    p.add_argument("--max-parallel", type=int, default=4, help="array runs at once (%%K; default 4)")
    p.add_argument("--signal", default=os.environ.get(SIGNAL_ENV, "USR1"),
                   help="requeue signal sent to the tasks before the time limit: USR1 (default) or USR2")
    p.add_argument("--signal-lead", type=int, default=120, help="seconds before the time limit (default 120)")
    p.add_argument("--no-requeue", action="store_true",
                   help="on the signal only checkpoint and stop; a failed task is not retried either")
    p.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES,
                   help=f"requeues of a run whose task died (killed, segfault, NCCL error), each resuming from "
                        f"last.ckpt (default {DEFAULT_MAX_RETRIES}; a failure repeating at the same step stops)")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="extra sbatch option, e.g. --sbatch-arg=--account=abc (repeatable)")
    p.add_argument("--setup", default=os.environ.get(SETUP_ENV), metavar="FILE",
                   help=f"shell file the job sources before Python: module loads, conda activate (${SETUP_ENV})")
    p.add_argument("--dry-run", action="store_true", help="check, then print the sbatch command instead")
    return p


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[options…, "--", overrides…]`` → (options, overrides)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv: list[str]) -> int:
    """Parse ``pipeline submit``'s options (overrides for ``pipeline fit`` after ``--``), check and submit."""
    options, overrides = split_overrides(argv[1:])
    return submit(build_parser().parse_args(options), overrides)
