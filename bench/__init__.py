"""Benchmarks of the agent against the usual deployment of the same model (``bench.run``)."""
