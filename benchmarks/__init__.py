"""Benchmark suite for ami-exporter's ingest path (see ``benchmarks/README.md``).

Not part of the unit tests: run it with ``python -m benchmarks.run``.
"""
