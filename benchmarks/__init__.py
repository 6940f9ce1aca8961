"""Benchmarks of batch-audiences against hand-written clients; run with ``python -m benchmarks``.

Not part of the test run: nothing here is collected by pytest, and no test asserts a time.
See ``benchmarks/README.md`` for how to run the suite and how to read its tables.
"""
