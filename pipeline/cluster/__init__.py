"""SLURM: request checks, ``pipeline submit``, the in-job launcher, run manifests, requeue on signal."""
