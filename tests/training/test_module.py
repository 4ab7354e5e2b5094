"""ScaledClassifier's scaling arguments are resolve_spec's: one source, checked here."""

from __future__ import annotations

import inspect

from pipeline.scaling.spec import SPEC_KEYS, resolve_spec
from pipeline.training.module import ScaledClassifier


def test_the_scaling_arguments_are_resolve_specs() -> None:
    """Same names, order, defaults and annotations: a parameter added to resolve_spec without the module (or
    a default changed in one place only) fails here instead of silently training another network."""
    spec = inspect.signature(resolve_spec).parameters
    module = inspect.signature(ScaledClassifier.__init__).parameters
    mine = [module[k] for k in list(module)[1:len(spec) + 1]]  # after self
    assert [p.name for p in mine] == list(SPEC_KEYS) == list(spec)
    assert [(p.default, p.annotation) for p in mine] == [(p.default, p.annotation) for p in spec.values()]
