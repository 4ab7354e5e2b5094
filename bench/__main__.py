"""``python -m bench [name …]``: run every ``bench/bench_*.py`` (or the named ones) and time each."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import bench


def available() -> list[str]:
    """Names of the benchmarks in this package (``bench_<name>.py`` → ``<name>``)."""
    return sorted(m.name.removeprefix("bench_") for m in pkgutil.iter_modules(bench.__path__)
                  if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (all if none); unknown names → one line on stderr, exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: python -m bench [name …]   (available: {' '.join(available())})")
        return 0
    names = [a.removesuffix(".py").removeprefix("bench/").removeprefix("bench_") for a in argv] or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"bench: no benchmark {', '.join(unknown)}; available: {' '.join(available())}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== bench_{name}", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"bench.bench_{name}").main()
        print(f"== bench_{name} done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
