"""SLURM: request checks, submitting a run or a run manifest (a job array), the in-job launcher, run manifests."""
