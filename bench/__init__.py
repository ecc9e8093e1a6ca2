"""Benchmarks: each `python -m bench.<name>` runs a private stack and prints one JSON object."""
