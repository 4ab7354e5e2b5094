"""Experiments: sweeps (points → plan → run manifest → local or SLURM runs), the grid's ranking, reports, statistics,
plots and tables of result records, and the demo's study."""
