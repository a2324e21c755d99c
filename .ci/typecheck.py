"""The type-checking gate (issue 26): pyright on the four source roots, errors per file held to a baseline.

    python .ci/typecheck.py            # fail when a file has more errors than .ci/pyright-baseline.json allows
    python .ci/typecheck.py --update   # write today's counts as the baseline (only ever lower it by hand-fixing)

Levels are pyproject's [tool.pyright]: strict on device/src (edgefleet.kernel, edgefleet.device), basic elsewhere.
The baseline is a ratchet on the way to 0: a file may not gain errors, a file not listed may have none, and a file
that has fewer than listed is reported so the baseline goes down with the fix (the gate passes meanwhile).
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / ".ci" / "pyright-baseline.json"


def run_pyright() -> list[dict]:
    pyright = Path(sys.executable).with_name("pyright")
    done = subprocess.run([str(pyright), "--outputjson"], cwd=ROOT, capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise SystemExit(f"typecheck: pyright gave no report (exit {done.returncode}):\n{done.stderr}") from error
    return [d for d in report["generalDiagnostics"] if d["severity"] == "error"]


def counts(errors: list[dict]) -> dict[str, int]:
    per_file = collections.Counter(str(Path(d["file"]).resolve().relative_to(ROOT)) for d in errors)
    return dict(sorted(per_file.items()))


def describe(error: dict) -> str:
    line = error["range"]["start"]["line"] + 1
    return f"  {Path(error['file']).resolve().relative_to(ROOT)}:{line}: {error['message']} ({error.get('rule', '')})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="write today's counts as the baseline")
    args = parser.parse_args()
    errors = run_pyright()
    now = counts(errors)
    if args.update:
        BASELINE.write_text(json.dumps(now, indent=0, sort_keys=True) + "\n")
        print(f"typecheck: baseline written: {sum(now.values())} errors in {len(now)} files ({BASELINE.name})")
        return 0
    allowed: dict[str, int] = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    over = {path: n for path, n in now.items() if n > allowed.get(path, 0)}
    under = {path: n for path, n in allowed.items() if now.get(path, 0) < n}
    for path, n in over.items():
        print(f"typecheck: {path}: {n} errors, the baseline allows {allowed.get(path, 0)}:")
        for error in errors:
            if str(Path(error["file"]).resolve().relative_to(ROOT)) == path:
                print(describe(error))
    if under:
        print(f"typecheck: {len(under)} files have fewer errors than the baseline: lower it "
              "(python .ci/typecheck.py --update)")
    print(f"typecheck: {sum(now.values())} errors in {len(now)} files (baseline {sum(allowed.values())})")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
