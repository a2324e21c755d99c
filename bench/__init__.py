"""Benchmarks: each module runs on its own (`python -m bench.<name>`) and prints ratios against a baseline
measured in the same run. `python -m bench` runs them all. Results are recorded in README.md."""
