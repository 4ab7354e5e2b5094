"""Training: the Lightning module and recipe, the training CLI, run directories and records, loggers, checkpoints,
transfer, export and prediction, and the requeue-on-signal callback."""
