"""What a device imports stays Python 3.9 code, checked on any Python in a second (the real 3.9 and 3.13 runs
are .ci/device-pythons). ruff already reports newer *syntax* there (per-file-target-version py39 in
pyproject.toml); this catches what parses on 3.9 but fails when it runs:
- names that do not exist before 3.10/3.11 (`datetime.UTC`, `types.UnionType`, `typing.Self`, `tomllib`...),
- `X | Y` type unions evaluated at run time (aliases, isinstance, casts; annotations are strings under
  `from __future__ import annotations`, and pydantic reads them with eval-type-backport),
- `zip(strict=...)` (3.10).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLOWS = REPO / "flows/src/edgefleet/flows"
DEVICE_CODE = sorted((REPO / "device/src").rglob("*.py")) + [
    FLOWS / "release" / "bundle.py",  # the device tests build their fixture bundles with it
    FLOWS / "release" / "agent.py",  # ... publish agent releases (tests/device) ...
    FLOWS / "deploy_agent" / "service.py",  # ... and start the agent as deploy-agent's service does
    FLOWS / "deploy_agent" / "device_access.py",
] + sorted((FLOWS / "registry").rglob("*.py")) + [  # ... publish them with the registry writer
    FLOWS / "trust" / f"{name}.py"  # ... which signs and judges what it writes with these
    for name in ("pointer_signing", "pointer_readback", "device_key_records", "enrolment_tokens",
                 "key_rotation", "agent_key_rotation")
]
NEWER_NAMES = {  # module -> names added after Python 3.9
    "datetime": {"UTC"},
    "types": {"UnionType", "EllipsisType", "NoneType", "NotImplementedType"},
    "typing": {"Self", "TypeAlias", "ParamSpec", "Concatenate", "TypeGuard", "Never", "LiteralString",
               "Required", "NotRequired", "Unpack", "TypeVarTuple", "assert_never", "reveal_type", "override"},
    "enum": {"StrEnum", "verify", "member", "nonmember"},
    "itertools": {"pairwise", "batched"},
    "contextlib": {"chdir", "aclosing"},
}
NEWER_MODULES = {"tomllib", "zoneinfo._tzpath"}


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of every node inside an annotation (not evaluated at run time under PEP 563)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            every = arguments.posonlyargs + arguments.args + arguments.kwonlyargs + [arguments.vararg,
                                                                                     arguments.kwarg]
            annotations = [a.annotation for a in every if a is not None] + [node.returns]
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in annotations:
            if annotation is not None:
                inside.update(id(child) for child in ast.walk(annotation))
    return inside


def _is_type_expression(node: ast.AST) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _is_type_expression(node.left) and _is_type_expression(node.right)
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Subscript):
        return True
    builtins = {"str", "int", "float", "bool", "bytes", "list", "dict", "tuple", "set", "type"}
    # A class name (CamelCase) or a builtin type; an ALL_CAPS name is a constant (flags OR-ed together).
    return isinstance(node, ast.Name) and ((node.id[:1].isupper() and not node.id.isupper()) or node.id in builtins)


def python39_problems(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    annotations = _annotation_nodes(tree)
    typing_only = _type_checking_nodes(tree)
    reported: set[int] = set()
    problems = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module in NEWER_NAMES:
            newer = sorted({alias.name for alias in node.names} & NEWER_NAMES[node.module])
            problems += [f"{where}: from {node.module} import {name} (newer than 3.9)" for name in newer]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            problems += [f"{where}: import {name} (newer than 3.9)" for name in names if name in NEWER_MODULES]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.attr in NEWER_NAMES.get(node.value.id, ()) and id(node) not in annotations:
            problems.append(f"{where}: {node.value.id}.{node.attr} (newer than 3.9)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in annotations \
                and id(node) not in reported and _is_type_expression(node):
            reported.update(id(child) for child in ast.walk(node))  # the outermost union only
            problems.append(f"{where}: `{ast.get_source_segment(source, node)}` is a run-time `X | Y` type union "
                            "(3.10+): use Optional[...] / Union[...] / a tuple")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "zip" and \
                any(keyword.arg == "strict" for keyword in node.keywords):
            problems.append(f"{where}: zip(strict=...) (3.10+)")
    return sorted(problems, key=lambda problem: int(problem.split(":")[1]))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (never run)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                inside.update(id(child) for child in ast.walk(statement))
    return inside


@pytest.mark.parametrize("path", DEVICE_CODE, ids=lambda path: str(path.relative_to(REPO)))
def test_device_code_runs_on_python_3_9(path):
    assert python39_problems(path) == []


def test_the_checker_finds_what_3_9_cannot_run(tmp_path):
    sample = REPO / "device/src" / "_python39_sample.py"  # inside REPO: problems are named relative to it
    sample.write_text("from __future__ import annotations\nimport datetime\nfrom datetime import UTC\n"
                      "Alias = int | None\nok: int | None = None\n"
                      "def f(x: str | None) -> int | None:\n    return isinstance(x, str | bytes)\n"
                      "when = datetime.UTC\npairs = zip([1], [2], strict=True)\nflags = OPEN | CREATE\n"
                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from types import EllipsisType\n")
    try:
        found = python39_problems(sample)
    finally:
        sample.unlink()
    assert [problem.split(": ", 1)[1].split(" ")[0] for problem in found] == \
        ["from", "`int", "`str", "datetime.UTC", "zip(strict=...)"]
