"""Data: shard writers from the datasets' on-disk formats, the shard manifest, and the DDP-exact streaming datamodule.

``pipeline.data.datamodule.ShardDataModule`` is imported from its module (it pulls in Lightning), so the
``pipeline shards`` command starts fast.
"""

from pipeline.data.shard_manifest import Manifest, load_manifest

__all__ = ["Manifest", "load_manifest"]
