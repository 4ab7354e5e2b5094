"""Export a checkpoint's network for timm users: ``model.safetensors`` + ``config.json`` (timm's hub format).

config.json holds what timm's ``local-dir:`` / ``hf-hub:`` loaders read (``architecture``, ``num_classes``,
``num_features``, ``pretrained_cfg``, ``model_args``) plus ``generator``: the timm call that builds the
network (:class:`pipeline.models.build.TimmCall`). Networks timm registers (B0–B7, ResNet-50 of any
scaling) load with ``timm.create_model("local-dir:DIR", pretrained=True)``. Scaled EfficientNets (φ, Dollár
strategies) are no registered timm model (``create_model`` cannot take the multipliers), so they load
through the generator the pipeline itself builds them with::

    import json, importlib, safetensors.torch
    cfg = json.load(open("DIR/config.json"))["generator"]
    model = getattr(importlib.import_module(cfg["module"]), cfg["function"])(**cfg["kwargs"])
    model.load_state_dict(safetensors.torch.load_file("DIR/model.safetensors"))

Either way only timm, torch and safetensors are imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save as safetensors_bytes

from pipeline.atomic import atomic_write, atomic_write_text
from pipeline.models.build import timm_call
from pipeline.training.checkpoint import checkpoint_path, checkpoint_spec, checkpoint_state, read_checkpoint

WEIGHTS, CONFIG = "model.safetensors", "config.json"
# generator arguments that describe the build rather than the network (not model_args of a registered name)
CALL_ONLY = ("variant", "channel_multiplier", "depth_multiplier", "model_name", "pretrained", "pretrained_cfg")


def export(source: str | Path, out: str | Path | None = None, ema: bool = True) -> Path:
    """Write ``model.safetensors`` and ``config.json`` of a run's (or checkpoint's) network; returns the folder.

    ``source`` is a run directory (its ``checkpoints/best.ckpt``) or a ``.ckpt`` file; ``out`` defaults to
    ``<run dir>/export``. ``ema`` picks the EMA weights (the default: the weights the paper reports).
    """
    path = checkpoint_path(source)
    checkpoint = read_checkpoint(path)
    spec, num_classes, in_chans = checkpoint_spec(checkpoint, path)
    state = {k: v.contiguous() for k, v in checkpoint_state(checkpoint, ema, path).items()}
    call = timm_call(spec, num_classes, in_chans)
    model = call.build()
    model.load_state_dict(state)  # strict: the export is exactly the network the generator rebuilds
    folder = Path(out) if out is not None else path.parent.parent / "export"
    pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if v is not None}
    config: dict[str, Any] = {
        "architecture": call.architecture or call.kwargs.get("variant", spec.name),
        "num_classes": num_classes,
        "num_features": model.num_features,
        "pretrained_cfg": pretrained_cfg,
        "model_args": {k: v for k, v in call.kwargs.items() if k not in CALL_ONLY},
        "generator": {"module": call.module, "function": call.function, "kwargs": call.kwargs},
        "source": {"checkpoint": str(path), "ema": ema, "spec": spec.record()},
    }
    atomic_write(folder / WEIGHTS, lambda f: f.write(safetensors_bytes(state, metadata={"format": "pt"})))
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
    return folder
