"""``python -m pipeline.commands.launch train|array …``: the in-job launcher behind ``slurm/*.sbatch``.

The batch step runs it: install the requeue-signal record first, check the request
(:func:`pipeline.cluster.launch.prepare`), note the attempt in the run's ``slurm.log``, then exec ``srun``.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from pipeline import preemption
from pipeline.cluster.launch import prepare, stop_before_training
from pipeline.errors import PipelineError
from pipeline.preemption import REQUEUE_ENV, SIGNAL_ENV


def main(argv: list[str]) -> int:
    """Check, record the job in the run directory's ``slurm.log``, then exec ``srun`` (never returns)."""
    sig = preemption.install()  # first: the checks below take seconds (they import the training stack)
    try:
        cmd, env, directory = prepare(argv, dict(os.environ))
    except PipelineError as err:
        print(f"pipeline launch: error: {err}", file=sys.stderr, flush=True)
        return 2
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "slurm.log", "a") as log:  # which jobs and attempts trained this run
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} job {env['SLURM_JOB_ID']} "
                  f"restart {env.get('SLURM_RESTART_COUNT', '0')} nodes {env.get('SLURM_JOB_NODELIST')} "
                  f"requeue {env.get(REQUEUE_ENV, '1')} signal {env.get(SIGNAL_ENV, 'USR1')}\n")
    print(f"pipeline launch: {socket.gethostname()} run {directory}\n  {' '.join(cmd)}", flush=True)
    if sig is not None and preemption.received(sig):
        return stop_before_training(env)
    os.execvpe(cmd[0], cmd, env)  # srun installs its own handlers (it forwards the signal to the tasks)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
