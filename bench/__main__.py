"""Runs every benchmark module in turn (`python -m bench [name ...]`)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("agent_bench", "monitor_bench", "release_bench", "rollout_bench", "canary_bench", "sandbox_bench")


def main(names: list[str]) -> int:
    failed = 0
    for name in names or BENCHMARKS:
        failed += int(importlib.import_module(f"bench.{name}").main() != 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
