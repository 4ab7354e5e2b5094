"""Is the shard loader faster than the usual loaders, per CPU process, at identical transforms?

Every row runs the loader and its peer side by side in this process on the same inputs: alternating
repeats (the order flips every repeat, so drift in a shared machine's load hits both alike), medians of
images/s, and the ratio of the medians. Peers: torchvision ``ImageFolder`` + timm ``create_transform`` on the
JPEG tree the shards were written from (float normalised output; ours is uint8 normalised by
``normalize_images``, timed in), and timm's own webdataset reader on the same shards. The AutoAugment /
RandAugment rows (``Settings.policies``) give both sides the same timm policy (the peer's posterize with TF's
0-bit black image, as ours), and a note lists each op's milliseconds, ours vs timm's PIL op. "limits" is the top
self-time of one cProfile'd pass of ours (with loader workers: of the training process, waiting for them).
Also: a Lightning fit vs a plain loop over the same loader, peak RSS of a train epoch at 1× and 10× the
samples, and (only where CUDA exists) B0–B4 training throughput from
shards vs synthetic data with the share of step time spent waiting for data.

Inputs: :mod:`bench.inputs` (ImageNet-like ~500×375 JPEGs from scikit-learn's photos). One torch thread per
process. Results: printed as one markdown table, and written to ``runs/bench/loader-<time>.{md,json}``;
``BENCH_WANDB=1`` also logs the table to a W&B run (offline unless W&B is configured otherwise).
"""

from __future__ import annotations

import cProfile
import importlib.util
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.gpu_check import TrainStep
from bench.inputs import make_imagenet_tree, write_bench_shards
from pipeline.data.augment import TENSOR_OPS, reference_policy
from pipeline.data.datamodule import ShardDataModule
from pipeline.data.sharding import JPEG_QUALITY
from pipeline.data.transforms import build_transform, normalize_images


@dataclass(frozen=True)
class Settings:
    """What to measure: sizes, repeats and which sections."""

    train: int = 400
    val: int = 100
    resolution: int = 224
    batch: int = 32
    repeats: int = 5  # this kind of machine (a shared VM) drifts by ±10 % between minutes
    workers: int = 2
    max_sides: tuple[int | None, ...] = (None, 384, 320)
    policies: tuple[str, ...] = ("v0", "rand-m9-mstd0.5-inc1")
    lightning_resolution: int = 64
    rss_factor: int = 10
    gpu_steps: int = 30


TINY = Settings(train=48, val=16, resolution=32, batch=8, repeats=1, workers=2, max_sides=(None, 32),
                policies=("v0",), lightning_resolution=32, rss_factor=2, gpu_steps=3)


@dataclass
class Row:
    """One line of the table: ours vs a peer, images/s medians and their ratio, what limits ours."""

    name: str
    ours: float
    peer_name: str
    peer: float
    limits: str = ""

    @property
    def ratio(self) -> float:
        """Ours / peer (medians)."""
        return self.ours / self.peer if self.peer else float("nan")


def images_per_s(batches: Iterable, normalize: bool = False) -> float:
    """Consume a loader; images/s (``normalize``: normalise uint8 batches as the device would)."""
    start, n = time.perf_counter(), 0
    for batch in batches:
        if normalize:
            normalize_images(batch[0])
        n += len(batch[1])
    return n / (time.perf_counter() - start)


def side_by_side(ours: Callable[[], float], peer: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Medians of ``repeats`` alternating runs of two measurements (order flipped every repeat)."""
    a, b = [], []
    for r in range(repeats):
        for fn, out in ((ours, a), (peer, b)) if r % 2 == 0 else ((peer, b), (ours, a)):
            out.append(fn())
    return statistics.median(a), statistics.median(b)


def top_self_time(fn: Callable[[], object], n: int = 3) -> str:
    """The ``n`` functions with the most self time in one profiled call of ``fn``, as shares."""
    prof = cProfile.Profile()
    prof.runcall(fn)
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    total = sum(v[2] for v in stats.values()) or 1.0
    top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    return ", ".join(f"{_function_name(k, stats)} {100 * v[2] / total:.0f}%" for k, v in top)


def _function_name(key: tuple[str, int, str], stats: dict) -> str:
    """``ImagingDecoder.decode``, ``torch._C._nn._upsample_bicubic2d_aa``, ``tarfile.nts`` from a pstats key.

    A torch custom op shows as its namespace only (``torch._ops.torchcodec_ns.``): the first caller outside
    ``torch/_ops.py`` names it (``torch._ops.torchcodec_ns.<_image_decoders._decode_to_mode>``).
    """
    file, _, name = key
    method = re.fullmatch(r"<method '(\w+)' of '([\w.]+)' objects>", name)
    if method:
        return f"{method[2].rsplit('.', 1)[-1]}.{method[1]}"
    if name.startswith("<built-in method "):
        name = name.removeprefix("<built-in method ").removesuffix(">")
        caller = key
        while name.endswith(".") and stats.get(caller, (None,) * 5)[4]:
            caller = next(iter(stats[caller][4]))
            if not caller[0].endswith(f"torch{os.sep}_ops.py"):
                return f"{name}<{_function_name(caller, stats)}>"
        return name
    return f"{Path(file).stem}.{name}" if file != "~" else name


def folder_loader(root: Path, s: Settings, train: bool, workers: int, auto_augment: str | None = None) -> DataLoader:
    """torchvision ImageFolder + timm create_transform (the same arguments as the shard loader's defaults).

    With ``auto_augment``, timm's PIL policy with TF's posterize (0 bits: black, where timm's op raises under
    Pillow ≥ 11), the policy the shard loader applies.
    """
    from torchvision.datasets import ImageFolder

    transform = build_transform(s.resolution, train=train, auto_augment=auto_augment)
    if auto_augment:
        transform.transforms = [reference_policy(t) if "Augment" in type(t).__name__ else t
                                for t in transform.transforms]
    ds = ImageFolder(str(root), transform=transform)
    return DataLoader(ds, batch_size=s.batch, shuffle=train, drop_last=train, num_workers=workers)


def timm_wds_loader(shards: Path, s: Settings, workers: int) -> DataLoader:
    """timm's own webdataset reader (``create_dataset("wds/…")``, via our ``_info.json``) + the same transform."""
    from timm.data import create_dataset

    ds = create_dataset("wds/imagenet", root=str(shards), split="train", is_training=True, batch_size=s.batch,
                        transform=build_transform(s.resolution, train=True))
    return DataLoader(ds, batch_size=s.batch, num_workers=workers)


def shard_module(shards: Path, s: Settings, workers: int, resolution: int | None = None,
                 backend: str = "pil", auto_augment: str | None = None) -> ShardDataModule:
    """The datamodule under test, as a training run would build it."""
    return ShardDataModule(str(shards), resolution=resolution or s.resolution, batch_size=s.batch,
                           num_workers=workers, shuffle_buffer=min(1000, s.train), test_split=None, backend=backend,
                           auto_augment=auto_augment)


def loader_rows(tree: Path, shards: dict[str | None, Path], s: Settings) -> list[Row]:
    """Ours vs ImageFolder + create_transform (train/eval, max sides, 1 and N workers) and vs timm's reader."""
    rows = []
    cases = [(side, "train", 0, None) for side in s.max_sides] + [(side, "val", 0, None) for side in s.max_sides[:2]]
    cases += [(None, "train", s.workers, None), (s.max_sides[-1], "train", s.workers, None)]
    for policy in s.policies:
        cases += [(side, "train", 0, policy) for side in s.max_sides] + [(s.max_sides[-1], "train", s.workers, policy)]
    for side, role, workers, policy in cases:
        dm = shard_module(shards[side], s, workers, auto_augment=policy)
        peer = folder_loader(tree / role, s, role == "train", workers, policy)
        ours, theirs = side_by_side(lambda dm=dm, role=role: images_per_s(dm.loader(role), True),
                                    lambda peer=peer: images_per_s(peer), s.repeats)
        # with workers, the training process's profile: how much of it is waiting for their batches
        limits = top_self_time(lambda dm=dm, role=role: images_per_s(dm.loader(role), True))
        rows.append(Row(f"{role}{f' {policy}' if policy else ''} {side or 'full'}-side shards, "
                        f"{workers or 1} {'workers' if workers else 'process'}",
                        ours, f"ImageFolder + create_transform{f' ({policy})' if policy else ''}", theirs, limits))
    side = s.max_sides[-1]
    dm = shard_module(shards[side], s, 0)
    peer = timm_wds_loader(shards[side], s, 0)
    ours, theirs = side_by_side(lambda: images_per_s(dm.loader("train"), True), lambda: images_per_s(peer),
                                s.repeats)
    rows.append(Row(f"train {side}-side shards, 1 process", ours, "timm wds reader + create_transform", theirs,
                    top_self_time(lambda: images_per_s(peer))))
    if importlib.util.find_spec("nvidia.dali") is not None:  # an optional dependency (requirements-dev has it)
        dali = shard_module(shards[side], s, 0, backend="dali").loader("train")  # num_threads = 1
        images_per_s(dali)  # builds the pipeline: timed epochs are steady ones, as for a training run
        ours, theirs = side_by_side(lambda: images_per_s(dm.loader("train"), True),
                                    lambda: images_per_s(dali, True), s.repeats)
        rows.append(Row(f"train {side}-side shards, 1 process", ours, "data.backend: dali on CPU (1 thread)",
                        theirs, "DALI: its own executor threads beside the 1 decode thread"))
    return rows


def op_times(s: Settings, repeats: int = 50) -> str:
    """Per-op milliseconds at ``s.resolution`` px on a photo: the tensor op vs timm's PIL op (same arguments)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images
    from timm.data.auto_augment import NAME_TO_OP

    img = Image.fromarray(load_sample_images().images[0]).resize((s.resolution,) * 2, Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
    kwargs = {"fillcolor": (124, 116, 104), "resample": Image.Resampling.BICUBIC}
    args = {"Rotate": (20.0,), "Posterize": (3,), "Solarize": (100,), "SolarizeAdd": (50,), "Color": (1.5,),
            "Contrast": (1.5,), "Brightness": (1.5,), "Sharpness": (1.5,), "ShearX": (0.2,), "ShearY": (0.2,),
            "TranslateXRel": (0.2,), "TranslateYRel": (0.2,)}

    def ms(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return 1e3 * (time.perf_counter() - start) / repeats

    parts = []
    for name in ("AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
                 "Brightness", "Sharpness", "Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"):
        a = args.get(name, ())
        ours, pil = side_by_side(lambda name=name, a=a: ms(lambda: TENSOR_OPS[name](x, *a, **kwargs)),
                                 lambda name=name, a=a: ms(lambda: NAME_TO_OP[name](img, *a, **kwargs)), s.repeats)
        parts.append(f"{name} {ours:.2f}/{pil:.2f}")
    return (f"AutoAugment / RandAugment op ms at {s.resolution} px, ours (uint8 tensor) / timm's PIL op, median of "
            f"{s.repeats}: " + ", ".join(parts))


def lightning_row(shards: Path, s: Settings) -> Row:
    """Images/s of a Lightning fit epoch vs a plain loop doing the same work (same model, loader, optimiser)."""
    import pytorch_lightning as pl
    import timm
    import torch.nn.functional as F

    dm = shard_module(shards, s, 0, resolution=s.lightning_resolution)

    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = timm.create_model("efficientnet_b0", num_classes=dm.num_classes)

        def training_step(self, batch: tuple, _: int) -> torch.Tensor:
            return F.cross_entropy(self.model(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def with_lightning() -> float:
        trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        start = time.perf_counter()
        trainer.fit(Plain(), datamodule=dm)
        return len(dm.train_dataloader()) * s.batch / (time.perf_counter() - start)

    def plain_loop() -> float:
        module = Plain()
        opt = module.configure_optimizers()
        start, n = time.perf_counter(), 0
        for batch in dm.train_dataloader():
            loss = module.training_step((normalize_images(batch[0]), batch[1]), 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(batch[1])
        return n / (time.perf_counter() - start)

    ours, theirs = side_by_side(with_lightning, plain_loop, s.repeats)
    return Row(f"train epoch, B0 at {s.lightning_resolution} px, CPU", ours, "plain PyTorch loop", theirs,
               top_self_time(with_lightning))


RSS_CHILD = """
import re, sys, torch
from bench.bench_loader import shard_module, Settings
def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read())[1]) / 1024
torch.set_num_threads(1)
dm = shard_module(sys.argv[1], Settings(batch=int(sys.argv[2]), train=int(sys.argv[3])), 0)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak: the epoch's own, not the imports'
start = status("VmRSS")
n = sum(len(b[1]) for b in dm.loader("train"))
print(n, start, status("VmHWM"))
"""


def rss_row(tree: Path, work: Path, s: Settings) -> Row:
    """Peak RSS (MiB) of one train epoch over the train split and over one ``rss_factor`` × as large.

    The large split hard-links each JPEG ``rss_factor`` times (no new pixels, a real ×N epoch). Each epoch
    runs in a fresh process whose peak is reset (``/proc/self/clear_refs``) once the loader is built, so the
    numbers are the epoch's own peaks, not the imports'.
    """
    big_tree = work / f"tree-x{s.rss_factor}"
    if not (big_tree / ".complete").exists():
        for src in (tree / "train").glob("*/*.JPEG"):
            for k in range(s.rss_factor):
                dst = big_tree / "train" / src.parent.name / f"{src.stem}r{k}.JPEG"
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    os.link(src, dst)
        for src in (tree / "val").glob("*/*.JPEG"):
            (big_tree / "val" / src.parent.name).mkdir(parents=True, exist_ok=True)
            if not (big_tree / "val" / src.parent.name / src.name).exists():
                os.link(src, big_tree / "val" / src.parent.name / src.name)
        (big_tree / ".complete").write_text("")
    small_shards = write_bench_shards(tree, work, "full", None)
    big_shards = write_bench_shards(big_tree, work, f"x{s.rss_factor}", None)
    starts, peaks = [], []
    for shards, count in ((small_shards, s.train), (big_shards, s.train * s.rss_factor)):
        # the same settings (shuffle buffer: min(1000, s.train) samples) for both epochs
        out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(shards), str(s.batch), str(s.train)],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent)
        n, start, peak = out.stdout.split()[-3:]
        assert int(n) == count // s.batch * s.batch, out.stdout
        starts.append(float(start))
        peaks.append(float(peak))
    return Row(f"peak RSS (MiB) of a train epoch, {s.rss_factor}× the samples", peaks[1], "1× the samples",
               peaks[0], f"the epoch adds {peaks[1] - starts[1]:.0f} / {peaks[0] - starts[0]:.0f} MiB to the "
               f"{starts[1]:.0f} / {starts[0]:.0f} MiB of the process before it")


def gpu_rows(shards: Path, s: Settings) -> list[Row] | str:
    """B0–B4 bf16 + channels_last training images/s, ± torch.compile: the real loader vs synthetic data.

    Where CUDA is missing, one line saying so. ``limits`` holds the share of step time spent waiting for data.
    """
    if not torch.cuda.is_available():
        return "GPU section skipped: no CUDA device on this machine"
    import timm

    rows = []
    workers = max(1, (os.cpu_count() or 2) - 1)
    for variant in ("b0", "b1", "b2", "b3", "b4"):
        cfg = timm.create_model(f"efficientnet_{variant}", pretrained=False).pretrained_cfg
        res = cfg["input_size"][-1]
        dm = ShardDataModule(str(shards), resolution=res, batch_size=s.batch, num_workers=workers,
                             test_split=None, crop_pct=cfg.get("crop_pct", 0.875))
        for compiled in (False, True):
            step = TrainStep(timm.create_model(f"efficientnet_{variant}", num_classes=1000), compiled=compiled)
            synth, _ = step.images_per_s(s.gpu_steps, s.batch, res)
            ours, wait = step.images_per_s(s.gpu_steps, s.batch, res, lambda dm=dm: dm.loader("train"))
            rows.append(Row(f"{variant} {res} px bf16 channels_last{' compiled' if compiled else ''}, "
                            f"{workers} workers", ours, "synthetic data in GPU memory", synth,
                            f"waiting for data {100 * wait:.0f}% of step time"))
    return rows


def table(rows: list[Row], notes: list[str]) -> str:
    """The markdown table."""
    lines = ["| measurement | ours | peer | peer value | ratio | limits (ours; top self time) |",
             "|---|---:|---|---:|---:|---|"]
    lines += [f"| {r.name} | {r.ours:.1f} | {r.peer_name} | {r.peer:.1f} | {r.ratio:.2f}× | {r.limits} |"
              for r in rows]
    return "\n".join([*lines, "", *notes])


def run(s: Settings, work: Path, results: Path) -> list[Row]:
    """Make the inputs under ``work``, measure every section, print and save the table under ``results``."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tree = make_imagenet_tree(work / "tree", train=s.train, val=s.val)
    shards = {side: write_bench_shards(tree, work, str(side or "full"), side) for side in s.max_sides}
    rows = loader_rows(tree, shards, s)
    rows.append(lightning_row(shards[s.max_sides[-1]], s))
    rows.append(rss_row(tree, work, s))
    gpu = gpu_rows(shards[None], s)
    notes = [f"images/s (peak RSS: MiB), median of {s.repeats} alternating repeats; {s.resolution} px, batch "
             f"{s.batch}, {s.train} train / {s.val} val JPEGs (max-side shards re-encoded at quality {JPEG_QUALITY}); "
             "one torch thread per process; "
             f"{os.cpu_count()} CPUs ({_cpu_name()}), torch {torch.__version__}"]
    notes.append(op_times(s))
    if isinstance(gpu, str):
        notes.append(gpu)
    else:
        rows += gpu
    text = table(rows, notes)
    print(text)
    results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"loader-{stamp}.md").write_text(text + "\n")
    (results / f"loader-{stamp}.json").write_text(json.dumps(
        {"settings": asdict(s), "notes": notes, "rows": [{**asdict(r), "ratio": r.ratio} for r in rows]}, indent=1))
    if os.environ.get("BENCH_WANDB"):
        import wandb

        with wandb.init(project=os.environ.get("WANDB_PROJECT", "pipeline-bench"), job_type="bench",
                        mode=os.environ.get("WANDB_MODE", "offline"), dir=str(results)) as wb:
            wb.log({"loader": wandb.Table(columns=["measurement", "ours", "peer", "peer value", "ratio", "limits"],
                                          data=[[r.name, r.ours, r.peer_name, r.peer, r.ratio, r.limits]
                                                for r in rows])})
    return rows


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main() -> None:
    """``make bench``: the full settings, inputs under ``runs/bench/inputs``."""
    run(Settings(), Path("runs/bench/inputs"), Path("runs/bench"))


if __name__ == "__main__":
    main()
