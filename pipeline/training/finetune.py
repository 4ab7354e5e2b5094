"""Transfer learning: start a run from another run's checkpoint or from timm's pretrained weights.

``model.init_from`` names the source: a ``.ckpt`` file of this pipeline, a run directory (its
``checkpoints/best.ckpt``: the weights the source run reports, chosen by ``run.monitor``; ``last.ckpt`` is
for resuming, pass its path to start from it instead), or ``timm:<model name>`` for timm's pretrained
weights. The source must be the requested network: for a checkpoint the ScaleSpec saved in its
hyper-parameters is resolved and compared with the requested one (every field but the regularisers
dropout and drop_path), for timm the tensor shapes are compared. Everything but the classifier is copied;
the head is the target's, freshly initialised. ``model.init_ema`` (default true) starts from the source's
EMA weights: the paper fine-tunes the ImageNet checkpoints it reports, which in TF's reference (and timm's
releases) are the EMA weights.

:func:`initial_weights` is the one mechanism: the training CLI calls it before any run directory exists
(its errors are one line, exit 2) and the module calls it again in ``__init__``, before the optimizer and
the EMA copy are built. A resumed run (``--ckpt_path``) restores every weight from its own checkpoint, so
the CLI drops ``init_from`` there and the source is neither checked nor read again.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from torch import Tensor, nn

from pipeline.errors import PipelineError, first_line
from pipeline.models.build import build_model
from pipeline.scaling import ScaleSpec
from pipeline.scaling.spec import SPEC_KEYS, resolve_spec
from pipeline.training.checkpoint import checkpoint_path, checkpoint_spec, checkpoint_state, read_checkpoint

TIMM_PREFIX = "timm:"
# ScaleSpec fields that may differ between source and target: regularisation, not architecture
REGULARISERS = ("dropout", "drop_path", "dropout_rule")


def spec_overrides(hparams: dict[str, Any]) -> str:
    """The command-line keys that request the network of saved hyper-parameters (those off their defaults)."""
    defaults = {k: p.default for k, p in inspect.signature(resolve_spec).parameters.items()}
    keys = [k for k in SPEC_KEYS if k not in REGULARISERS and k in hparams and hparams[k] != defaults[k]]
    return " ".join(f"--model.{k} {hparams[k]}" for k in keys)


def check_same_network(source: ScaleSpec, source_chans: int, target: ScaleSpec, target_chans: int,
                       where: str, hint: str) -> None:
    """PipelineError naming every differing ScaleSpec field (and in_chans) of source and target."""
    fields = [f.name for f in dataclasses.fields(ScaleSpec) if f.name not in REGULARISERS]
    diff = [f"{k} {getattr(source, k)} vs {getattr(target, k)}" for k in fields
            if getattr(source, k) != getattr(target, k)]
    if source_chans != target_chans:
        diff.append(f"in_chans {source_chans} vs {target_chans}")
    if diff:
        raise PipelineError(f"the requested model is not the network of {where} (source vs requested: "
                            f"{'; '.join(diff)}); request it with: {hint}")


def head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the model's classifier (timm's ``get_classifier()``)."""
    head = model.get_classifier()
    name = next(n for n, m in model.named_modules() if m is head)
    return {f"{name}.{k}" for k in head.state_dict()}


def _timm_weights(name: str, spec: ScaleSpec, in_chans: int) -> dict[str, Tensor]:
    import timm

    if not timm.is_model(name):
        raise PipelineError(f"timm has no model {name!r} (timm.list_models() lists them)")
    target = build_model(spec, in_chans=in_chans)
    skip = head_keys(target)  # a network with other head names is another network: its keys differ anyway
    want = {k: tuple(v.shape) for k, v in target.state_dict().items() if k not in skip}
    plain = timm.create_model(name, pretrained=False, in_chans=in_chans)
    have = {k: tuple(v.shape) for k, v in plain.state_dict().items() if k not in skip}
    if want != have:
        differ = sorted(set(want) ^ set(have) | {k for k in set(want) & set(have) if want[k] != have[k]})
        raise PipelineError(f"timm:{name} is not the requested network {spec.base}-{spec.name} "
                            f"({len(differ)} tensors differ, e.g. {differ[0]}); request its variant, "
                            "e.g. --model.variant b0")
    try:
        model = timm.create_model(name, pretrained=True, in_chans=in_chans)
    except (OSError, RuntimeError) as err:  # huggingface_hub's offline errors are OSErrors
        raise PipelineError(f"cannot fetch timm's pretrained weights for {name} (no hub access? "
                            f"{first_line(err)}); no run starts from random weights in their place") from None
    return model.state_dict()


def initial_weights(init_from: str, init_ema: bool, spec: ScaleSpec, in_chans: int) -> dict[str, Tensor]:
    """The source's weights (its classifier included), after checking that it is the ``spec`` network."""
    if init_from.startswith(TIMM_PREFIX):
        return _timm_weights(init_from[len(TIMM_PREFIX):], spec, in_chans)
    path = checkpoint_path(init_from)
    checkpoint = read_checkpoint(path)
    source, _, source_chans = checkpoint_spec(checkpoint, path)
    check_same_network(source, source_chans, spec, in_chans, str(path),
                       spec_overrides(checkpoint["hyper_parameters"]))
    return checkpoint_state(checkpoint, init_ema, path)


def load_backbone(model: nn.Module, weights: dict[str, Tensor]) -> None:
    """Copy ``weights`` but the classifier's into ``model``, whose head (the target's classes) stays new."""
    head = head_keys(model)
    result = model.load_state_dict({k: v for k, v in weights.items() if k not in head}, strict=False)
    missing = set(result.missing_keys) - head
    if missing or result.unexpected_keys:
        raise PipelineError(f"source weights do not fit the model (missing {sorted(missing)[:3]}, "
                            f"unexpected {sorted(result.unexpected_keys)[:3]})")


def check_source(model_config: Any) -> None:
    """The training CLI's early check of ``model.init_from`` / ``linear_probe`` (before any run directory)."""
    if model_config.get("linear_probe") and not model_config.get("init_from"):
        raise PipelineError("model.linear_probe trains only the head: it needs model.init_from (a source network)")
    if model_config.get("init_from"):
        spec = resolve_spec(**{k: model_config[k] for k in SPEC_KEYS})
        initial_weights(model_config["init_from"], model_config["init_ema"], spec, model_config["in_chans"])


def freeze_backbone(model: nn.Module) -> None:
    """Linear probe: no gradients for anything but the classifier."""
    head = model.get_classifier()
    for p in model.parameters():
        p.requires_grad_(False)
    head.requires_grad_(True)


def backbone_eval(model: nn.Module) -> None:
    """Linear probe: the frozen backbone's BatchNorm and dropout in eval mode (statistics stay the source's)."""
    head = model.get_classifier()
    for module in model.modules():
        if module is not model and module is not head:
            module.train(False)
