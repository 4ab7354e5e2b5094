"""``python -m pipeline.commands.launch train|resume|array …``: the in-job launcher behind ``slurm/*.sbatch``.

The batch step runs it: install the requeue-signal record first, check the request
(:func:`pipeline.cluster.launch.prepare`), note the attempt in the run's ``slurm.log``, run ``srun`` as a
child (signals passed on), and on a failure requeue the job to resume from ``last.ckpt`` when
:func:`pipeline.cluster.launch.retry_decision` allows it.
"""

from __future__ import annotations

import os
import signal as signals
import socket
import sys

from pipeline import preemption
from pipeline.cluster.launch import log_line, prepare, retry_decision, run_child, stop_before_training
from pipeline.errors import PipelineError
from pipeline.preemption import REQUEUE_ENV, SIGNAL_ENV, job_to_requeue, requeue_job


def main(argv: list[str]) -> int:
    """Check, record the attempt, train through ``srun``; retry a failure by requeueing; the job's exit status."""
    sig = preemption.install()  # first: the checks below take seconds (they import the training stack)
    try:
        cmd, env, directory = prepare(argv, dict(os.environ))
    except PipelineError as err:
        print(f"pipeline launch: error: {err}", file=sys.stderr, flush=True)
        return 2
    directory.mkdir(parents=True, exist_ok=True)
    log_line(directory, f"job {env['SLURM_JOB_ID']} restart {env.get('SLURM_RESTART_COUNT', '0')} nodes "
                        f"{env.get('SLURM_JOB_NODELIST')} requeue {env.get(REQUEUE_ENV, '1')} signal "
                        f"{env.get(SIGNAL_ENV, 'USR1')}")
    print(f"pipeline launch: {socket.gethostname()} run {directory}\n  {' '.join(cmd)}", flush=True)
    if sig is not None and preemption.received(sig):
        return stop_before_training(env)
    # srun passes the requeue signal on to the tasks; SIGTERM (scancel, the time limit) ends the attempt
    code, received = run_child(cmd, env, tuple(s for s in (sig, signals.SIGTERM, signals.SIGINT) if s))
    if code == 0 or received:
        log_line(directory, f"job {env['SLURM_JOB_ID']} ended: exit {code}"
                            + (f" after {', '.join(signals.Signals(s).name for s in sorted(received))}"
                               if received else ""))
        return code
    try:
        retry, why = retry_decision(directory, code, env)
    except PipelineError as err:
        retry, why = False, str(err)
    log_line(directory, f"job {env['SLURM_JOB_ID']} {why}")
    if retry:
        error = requeue_job(env)
        if error is None:
            print(f"pipeline launch: {why}: requeued SLURM job {job_to_requeue(env)}", flush=True)
            return 0
        why = f"{why}, but `scontrol requeue` failed: {error}"
        log_line(directory, why)
    print(f"pipeline launch: error: {why}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
