"""Does training runtime track activations (Dollár et al.) rather than flops? B0 scaled by s = 4, five ways.

Every strategy scales B0's flops by s = 4 (``d, w, r, dwr, dWr``); their activations differ by up to 2×.
On the CPU, forward + backward images/s of each, measured side by side: interleaved repeats in a rotating
order (so drift in a shared machine's load hits every strategy alike), median of the repeats. Printed
relative to ``dwr`` (uniform compound scaling) next to the activation and flops ratios. Reduced base
resolution and a small batch keep the run under ~2 minutes; the ratios, not the absolute speeds, matter.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F

from pipeline.models.build import build_model
from pipeline.models.complexity import count_complexity
from pipeline.scaling import resolve_spec

STRATEGIES = ("d", "w", "r", "dwr", "dWr")
SCALE = 4
# B0's own is 224. At 64 px the CPU's per-op overhead dominates (deep nets slowest whatever their size:
# time correlated 0.09 with acts, 0.69 with flops); at 128 px the work dominates and the run takes ~1 min.
BASE_RESOLUTION = 128
BATCH = 8
REPEATS = 3
STEPS = 2  # timed training steps per strategy per repeat
NUM_CLASSES = 1000
REFERENCE = "dwr"


def train_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One forward + backward (no optimizer: its cost is per parameter, not what scaling laws compare)."""
    F.cross_entropy(model(images), labels).backward()
    model.zero_grad(set_to_none=True)


def log_correlation(xs: list[float], ys: list[float]) -> float:
    """Pearson correlation of log x and log y."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    cov = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in lx) * sum((b - my) ** 2 for b in ly))


def main() -> None:
    """Measure and print the table."""
    torch.manual_seed(0)
    # One thread: on shared cores OpenMP's spinning threads make step times depend on the neighbours' load.
    torch.set_num_threads(1)
    specs = {st: resolve_spec(strategy=st, scale=SCALE, base_resolution=BASE_RESOLUTION) for st in STRATEGIES}
    models, costs, batches = {}, {}, {}
    for st, spec in specs.items():
        models[st] = build_model(spec, num_classes=NUM_CLASSES).train()
        costs[st] = count_complexity(models[st], spec.resolution)
        batches[st] = (torch.randn(BATCH, 3, spec.resolution, spec.resolution),
                       torch.randint(0, NUM_CLASSES, (BATCH,)))
        train_step(models[st], *batches[st])  # warm-up: allocator, kernels
    seconds: dict[str, list[float]] = {st: [] for st in STRATEGIES}
    for repeat in range(REPEATS):
        order = STRATEGIES[repeat % len(STRATEGIES):] + STRATEGIES[:repeat % len(STRATEGIES)]
        for st in order:
            start = time.perf_counter()
            for _ in range(STEPS):
                train_step(models[st], *batches[st])
            seconds[st].append((time.perf_counter() - start) / STEPS)
    step_time = {st: statistics.median(ts) for st, ts in seconds.items()}

    ref_t, ref_c = step_time[REFERENCE], costs[REFERENCE]
    print(f"B0 scaled by s = {SCALE} at base resolution {BASE_RESOLUTION} px (B0's own: 224; reduced to keep "
          f"this short), CPU, {torch.get_num_threads()} threads, batch {BATCH}, forward + backward, median of "
          f"{REPEATS} interleaved repeats × {STEPS} steps; ratios relative to {REFERENCE}")
    header = f"{'strategy':<8} {'d':>5} {'w':>5} {'res':>4} {'flops(M)':>9} {'acts(M)':>8} {'img/s':>7} " \
             f"{'time×':>6} {'acts×':>6} {'flops×':>6}"
    print(header)
    for st in STRATEGIES:
        spec, c, t = specs[st], costs[st], step_time[st]
        print(f"{st:<8} {spec.d:5.2f} {spec.w:5.2f} {spec.resolution:4d} {c.flops / 1e6:9.0f} {c.acts / 1e6:8.2f} "
              f"{BATCH / t:7.1f} {t / ref_t:6.2f} {c.acts / ref_c.acts:6.2f} {c.flops / ref_c.flops:6.2f}")
    times = [step_time[st] for st in STRATEGIES]
    print(f"correlation of log time with log acts: {log_correlation(times, [costs[s].acts for s in STRATEGIES]):.2f}, "
          f"with log flops: {log_correlation(times, [costs[s].flops for s in STRATEGIES]):.2f}, "
          f"with log params: {log_correlation(times, [costs[s].params for s in STRATEGIES]):.2f}")


if __name__ == "__main__":
    main()
