"""The ``pipeline`` subcommands: one module each, holding only argument parsing and ``main(argv) -> int``.

The top layer: a command module may import any package; no library module imports a command module
(``tests/test_layers.py``). ``pipeline.cli`` dispatches to them.
"""
