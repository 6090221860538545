"""Benchmarks of aiomp against its peers; see README.md. Run with ``python -m benchmarks``."""
