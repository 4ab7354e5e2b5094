"""Training: the Lightning module and recipe, ``pipeline fit|validate|test``, run directories, loggers, checkpoints."""
