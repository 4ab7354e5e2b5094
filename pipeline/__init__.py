"""Compound-scaling training pipeline: EfficientNet compound scaling and Dollár et al.'s fast
scaling, timm models, webdataset shards, Lightning DDP on SLURM, W&B logging."""

__version__ = "0.1.0"
