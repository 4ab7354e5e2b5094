"""Benchmarks: each ``bench/bench_<name>.py`` exposes ``main() -> None`` and prints its peers side by side."""
