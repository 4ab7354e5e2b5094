"""``make gpu-check``: every GPU claim of the project on one CUDA GPU, as one table, in under 8 minutes.

Claims, each a row that passes or fails:

1. ``pipeline fit`` with ``configs/trainer/gpu.yaml`` (bf16-mixed, channels_last, DDP with SyncBatchNorm over one
   device), compile off and on, for a few hundred steps on the digits shards: exits 0, writes ``result.json`` and
   learns (val top-1 well above the 10 % of chance).
2. EfficientNet-B0 at 224 px, bf16 autocast + channels_last, ± ``torch.compile``, from shards through the real
   loader (the CPU path, and DALI) and from synthetic data in GPU memory: images/s and the share of step time
   spent waiting for data (reported; the claim is that each runs with a finite loss).
3. Our B0 (``build_model`` of the paper's B0 spec) in a plain loop beside timm's own ``efficientnet_b0`` on the
   same GPU and synthetic batches: at least ``MODEL_RATIO`` of timm's images/s.
4. A DALI epoch's exact coverage on the GPU (mixed decode, the ``v0`` policy): train gives ⌊N / batch⌋ full
   batches; val gives every sample exactly once (the CPU path's label multiset).

Without CUDA it prints one line and exits 0. DALI is an optional dependency: without it the DALI rows fail (pass
``--no-dali`` to leave them out). A torch-only GPU machine lacks some wheels (webdataset, jsonargparse, DALI):
``../shared/tools/device-wheels.sh`` fetches them on a machine with network access, to carry over.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.transforms import normalize_images

REPO = Path(__file__).resolve().parent.parent
NO_CUDA = "gpu-check: no CUDA device on this machine; nothing to check"
FIT_EPOCHS = 7  # digits: 44 updates per epoch at batch 32 → ~300 steps
FIT_MIN_TOP1 = 0.5
MODEL_RATIO = 0.9
BUDGET_S = 480  # the whole check, inputs included
CLI = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass(frozen=True)
class Claim:
    """One row of the table: what was measured and whether it meets what the project claims."""

    name: str
    measured: str
    expected: str
    ok: bool


def table(claims: list[Claim]) -> str:
    """The markdown table of ``claims`` with a pass / FAIL column and a last line counting failures."""
    lines = ["| claim | measured | expected | |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.measured} | {c.expected} | {'pass' if c.ok else 'FAIL'} |" for c in claims]
    failed = sum(not c.ok for c in claims)
    lines.append("")
    lines.append(f"{len(claims) - failed} of {len(claims)} claims pass" + (f"; {failed} FAIL" if failed else ""))
    return "\n".join(lines)


def exit_status(claims: list[Claim]) -> int:
    """0 when every claim passes (and there is at least one), else 1."""
    return 0 if claims and all(c.ok for c in claims) else 1


class TrainStep:
    """SGD steps of ``model`` on CUDA in bf16 autocast with channels_last inputs (``compiled``: through
    ``torch.compile``); :meth:`images_per_s` times them on synthetic data or a loader."""

    def __init__(self, model: nn.Module, *, compiled: bool) -> None:
        self.model = model.cuda().to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.loss = torch.tensor(float("nan"))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """One step on a uint8 batch (normalised on the device, as the datamodule does)."""
        images = normalize_images(images.cuda(non_blocking=True)).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(self.forward(images), labels.cuda(non_blocking=True))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss = loss.detach()

    def images_per_s(self, steps: int, batch: int, resolution: int,
                     loader: Callable[[], Iterable] | None = None) -> tuple[float, float]:
        """``(images/s, share of the time spent waiting for data)`` over ``steps`` steps after a 3-step warm-up
        (compile, cuDNN autotune) on synthetic data; ``loader`` None: one synthetic uint8 batch in GPU memory,
        else a factory of iterables of ``(images, labels, skipped)`` (called again when one ends)."""
        synthetic = (torch.randint(0, 256, (batch, 3, resolution, resolution), dtype=torch.uint8, device="cuda"),
                     torch.randint(0, 1000, (batch,), device="cuda"))
        for _ in range(3):
            self(*synthetic)
        torch.cuda.synchronize()
        batches: Iterator | None = iter(loader()) if loader is not None else None
        wait = 0.0
        n = 0
        start = time.perf_counter()
        while n < steps * batch:
            t = time.perf_counter()
            if batches is None:
                images, labels = synthetic
            else:
                try:
                    images, labels, _ = next(batches)
                except StopIteration:
                    batches = iter(loader())
                    continue
            wait += time.perf_counter() - t
            self(images, labels)
            n += len(labels)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return n / seconds, wait / seconds


def fit_claim(digits: Path, runs: Path, compiled: bool) -> Claim:
    """``pipeline fit`` on the digits shards with the GPU trainer config on one device (claim 1)."""
    name = f"gpu-check-compile-{'on' if compiled else 'off'}"
    args = ["fit", "--config", "configs/experiment/digits.yaml", "--config", "configs/trainer/gpu.yaml",
            "--trainer.devices", "1", "--trainer.max_epochs", str(FIT_EPOCHS), "--model.compile", str(compiled).lower(),
            "--data.root", str(digits), "--run.root", str(runs), "--run.name", name]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CLI, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    seconds = time.perf_counter() - start
    label = f"pipeline fit, gpu.yaml (bf16, channels_last, SyncBN, 1 device), compile {'on' if compiled else 'off'}"
    expected = f"exit 0, result.json, val top-1 ≥ {FIT_MIN_TOP1:.0%}"
    results = list(runs.rglob(f"{name}/result.json"))
    if proc.returncode != 0 or not results:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return Claim(label, f"exit {proc.returncode}: {tail}", expected, False)
    record = json.loads(results[0].read_text())
    top1 = record.get("top1") or 0.0
    return Claim(label, f"top-1 {top1:.1%}, {record.get('images_per_s') or 0:.0f} images/s, {seconds:.0f} s",
                 expected, top1 >= FIT_MIN_TOP1)


def throughput_claims(shards: Path, *, steps: int, batch: int, dali: bool) -> list[Claim]:
    """B0 at 224 px, bf16 + channels_last, ± compile: timm's model on synthetic data, through the CPU loader and
    DALI, and our B0 beside timm's (claims 2 and 3)."""
    import timm

    from pipeline.data.datamodule import ShardDataModule
    from pipeline.models.build import build_model
    from pipeline.scaling.spec import resolve_spec

    res = 224
    workers = max(1, (os.cpu_count() or 2) - 1)
    backends = ("pil", "dali") if dali else ("pil",)
    claims = []
    for compiled in (False, True):
        mode = f"B0 {res} px bf16 channels_last{', compiled' if compiled else ''}"
        timm_step = TrainStep(timm.create_model("efficientnet_b0", num_classes=1000), compiled=compiled)
        synth, _ = timm_step.images_per_s(steps, batch, res)
        for backend in backends:
            dm = ShardDataModule(str(shards), resolution=res, batch_size=batch, num_workers=workers,
                                 test_split=None, backend=backend)
            loader = dm.loader("train")  # one loader, iterated again at its end (as epochs are)
            rate, wait = timm_step.images_per_s(steps, batch, res, lambda loader=loader: loader)
            ok = math.isfinite(float(timm_step.loss)) and rate > 0
            claims.append(Claim(f"{mode}: shards through the {backend} loader ({workers} workers)",
                                f"{rate:.0f} images/s = {rate / synth:.2f}× synthetic ({synth:.0f}); waiting for "
                                f"data {wait:.0%} of step time", "runs, finite loss", ok))
        ours_step = TrainStep(build_model(resolve_spec(variant="b0")), compiled=compiled)
        ours, _ = ours_step.images_per_s(steps, batch, res)
        claims.append(Claim(f"{mode}: our B0 vs timm's efficientnet_b0, plain loop, synthetic batches",
                            f"{ours:.0f} vs {synth:.0f} images/s ({ours / synth:.2f}×)", f"≥ {MODEL_RATIO}×",
                            math.isfinite(float(ours_step.loss)) and ours >= MODEL_RATIO * synth))
    return claims


def dali_coverage_claim(shards: Path, batch: int) -> Claim:
    """A DALI epoch on the GPU covers the split exactly (claim 4)."""
    from pipeline.data.datamodule import ShardDataModule

    kwargs = {"resolution": 224, "batch_size": batch, "num_workers": 4, "test_split": None}
    dali = ShardDataModule(str(shards), backend="dali", auto_augment="v0", **kwargs)
    train = dali.manifest.split("train").count
    batches = [(images.is_cuda, len(labels)) for images, labels, _ in dali.loader("train")]
    sizes = [n for _, n in batches]
    val = Counter(int(x) for _, labels, _ in dali.loader("val") for x in labels)
    want = Counter(int(x) for _, labels, _ in ShardDataModule(str(shards), **kwargs).loader("val") for x in labels)
    on_gpu = all(cuda for cuda, _ in batches)
    measured = (f"train {len(sizes)} batches {'on' if on_gpu else 'NOT on'} the GPU (sizes {sorted(set(sizes))}), "
                f"val {sum(val.values())} "
                f"samples {'=' if val == want else '≠'} the CPU path's labels")
    return Claim("DALI epoch coverage (mixed decode, v0)", measured,
                 f"{train // batch} batches of {batch}; val = {sum(want.values())} samples, each once",
                 on_gpu and sizes == [batch] * (train // batch) and val == want)


def run(work: Path, *, dali: bool, steps: int = 40, batch: int = 128) -> list[Claim]:
    """Every claim, with inputs under ``work`` (digits shards, ImageNet-like shards)."""
    from bench.inputs import make_imagenet_tree, write_bench_shards

    digits = work / "digits"
    if not (digits / "manifest.json").exists():
        subprocess.run([sys.executable, "-c", CLI, "shards", "digits", "--out", str(digits)], cwd=REPO, check=True)
    claims = [fit_claim(digits, work / "runs", compiled) for compiled in (False, True)]
    shards = write_bench_shards(make_imagenet_tree(work / "tree", train=2560, val=256), work, "full", None)
    claims += throughput_claims(shards, steps=steps, batch=batch, dali=dali)
    if dali:
        claims.append(dali_coverage_claim(shards, batch))
    return claims


def main(argv: list[str] | None = None) -> int:
    """``make gpu-check``: the table of claims; exit 1 when one fails, 0 (one line) without CUDA."""
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="inputs and runs (default: a temporary directory)")
    parser.add_argument("--no-dali", action="store_true", help="leave out the DALI rows (DALI not installed)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    missing = [] if args.no_dali or importlib.util.find_spec("nvidia.dali") is not None else [
        Claim("NVIDIA DALI installed", "nvidia.dali is missing: its rows did not run", "installed (or --no-dali)",
              False)]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        claims = run(args.work or Path(tmp), dali=not (args.no_dali or missing)) + missing
    seconds = time.perf_counter() - start
    claims.append(Claim("the whole check", f"{seconds:.0f} s on {torch.cuda.get_device_name()}, torch "
                        f"{torch.__version__}", f"≤ {BUDGET_S} s", seconds <= BUDGET_S))
    print(table(claims))
    return exit_status(claims)


if __name__ == "__main__":
    sys.exit(main())
