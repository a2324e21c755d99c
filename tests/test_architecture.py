"""The house's structure, read from the imports as Python resolves them (issue 14).

- Path = import name: every module file is `<distribution>/src/edgefleet/...` (device/, flows/, infra/ and the
  root), found where its import name says (checked through the import system itself); `edgefleet` is a PEP
  420 namespace, and a distribution imports only the distributions it depends on.
- Layers: the kernel imports nothing of the project; the device imports only the kernel; nothing imports the
  operator CLI but the root package; the pipelines, the monitor, the local stack and the infrastructure are
  never imported by the device or the kernel.
- Fleet access (`edgefleet.flows.fleet`: inventory, the one SSH connection, agent operations, step records) is
  used by the flows and imports none of them; only it imports the SSH libraries (fabric, paramiko, invoke).
- No import circle, module to module (imports inside functions count: a lazy import is still a tie).
- Nothing unconnected: every module is imported by another module of the project, or is an entry point
  listed with what starts it (a package is tied through its modules: importing one runs its `__init__`).

The graph is built from each file's `import` statements (`ast`), resolved to modules of the project; what a
module loads by `importlib.import_module` is listed in DYNAMIC_IMPORTS.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOT = "edgefleet"
PACKAGES = ("kernel", "device", "flows", "monitor", "local", "cli", "infra")
# Which top-level packages each one may import (besides itself). The root package (the demo) may use all.
ALLOWED = {
    "kernel": set(),
    "device": {"kernel"},
    "flows": {"kernel", "device", "monitor"},  # the rollout judges from the fleet state
    "monitor": {"kernel", "device"},
    "infra": {"kernel", "device"},
    "local": {"kernel", "device", "flows", "monitor", "infra", "root"},
    "cli": {"kernel", "device", "flows", "monitor", "local", "infra", "root"},
    "root": {"kernel", "device", "flows", "monitor", "local", "infra", "cli"},
}


# Each distribution's source root and the top-level packages it holds ("root": modules of the namespace itself);
# `edgefleet` is a PEP 420 namespace across them. Its dependencies are the distributions whose packages it may use.
DISTRIBUTIONS = {
    "device/src": {"kernel", "device"},
    "flows/src": {"flows", "monitor"},
    "infra/src": {"infra"},
    "src": {"cli", "local", "root"},
}
DEPENDS = {"device/src": set(), "flows/src": {"device/src"}, "infra/src": {"device/src"},
           "src": {"device/src", "flows/src", "infra/src"}}


def _module_files() -> dict[str, Path]:
    modules = {}
    for source in DISTRIBUTIONS:
        for path in sorted((REPO / source / ROOT).rglob("*.py")):
            parts = list(path.relative_to(REPO / source).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "root"


def _resolve(name: str) -> str | None:
    """The project module an imported name lands in (`a.b.C` -> `a.b` when C is no module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            if name.split(".")[0] == ROOT and (target := _resolve(name)) and target != module:
                found.add(target)
    return found | DYNAMIC_IMPORTS.get(module, set())


def _dynamic_imports() -> dict[str, set[str]]:
    """What modules load by name with `importlib.import_module` (no import statement shows it)."""
    from edgefleet.cli.app import COMMAND_MODULES

    return {"edgefleet.cli.app": {f"edgefleet.cli.{name}" for name in COMMAND_MODULES}}


DYNAMIC_IMPORTS = _dynamic_imports()
GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _descendants(package: str) -> set[str]:
    return {m for m in MODULES if m.startswith(f"{package}.")}


def _ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_is_where_its_import_name_says(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} does not import"
    assert Path(spec.origin).resolve() == MODULES[module].resolve()


def test_the_layers_hold() -> None:
    broken = sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if _layer(target) != _layer(module) and _layer(target) not in ALLOWED[_layer(module)]
    )
    assert not broken, "imports across the layers (see ALLOWED):\n" + "\n".join(broken)


FLEET = "edgefleet.flows.fleet"
SSH_LIBRARIES = {"fabric", "paramiko", "invoke"}


def _in_fleet(module: str) -> bool:
    return module == FLEET or module.startswith(f"{FLEET}.")


def test_the_fleet_package_imports_no_flow() -> None:
    """rollout, deploy-agent and the release's compile host reach hosts through the fleet package; it never
    reaches back into a flow (nor the monitor): the kernel and the device's contracts only."""
    broken = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() if _in_fleet(module)
                    for target in targets if _layer(target) in {"flows", "monitor"} and not _in_fleet(target))
    assert not broken, "the fleet package imports a flow:\n" + "\n".join(broken)


def test_only_the_fleet_package_imports_the_ssh_libraries() -> None:
    found = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(name.split(".")[0] in SSH_LIBRARIES for name in names) and not _in_fleet(module):
                found.add(module)
    assert not found, f"SSH libraries imported outside {FLEET} (connect through it): {sorted(found)}"


def test_each_package_lives_in_its_distribution_and_the_namespace_is_shared() -> None:
    for source, layers in DISTRIBUTIONS.items():
        assert not (REPO / source / ROOT / "__init__.py").exists(), f"{source}: `edgefleet` is a namespace (PEP 420)"
        found = {_layer(m) for m, path in MODULES.items() if path.is_relative_to(REPO / source)}
        assert found <= layers, f"{source} holds {sorted(found - layers)}: see DISTRIBUTIONS"


def test_no_module_is_left_outside_a_source_root() -> None:
    """A file merged in at a pre-move path (`device/x.py`, `flows/y/z.py`, `kernel/`) would import as nothing."""
    # <dist>/build/ is what building the wheel leaves (deploy-agent, test_real_agent: pip wheel device/), git-ignored
    stray = sorted(str(path.relative_to(REPO)) for dist in ("device", "flows", "infra")
                   for path in (REPO / dist).rglob("*.py")
                   if not any(path.is_relative_to(REPO / dist / folder) for folder in ("src", "build")))
    stray += [f"{name}/" for name in ("kernel", "monitor", "cli", "local", ROOT) if (REPO / name).exists()]
    assert not stray, f"move these under their distribution's src/ (see DISTRIBUTIONS): {stray}"


def test_a_distribution_imports_only_what_it_depends_on() -> None:
    home = {layer: source for source, layers in DISTRIBUTIONS.items() for layer in layers}
    broken = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() for target in targets
                    if home[_layer(target)] not in {home[_layer(module)]} | DEPENDS[home[_layer(module)]])
    assert not broken, "imports a distribution does not depend on (see DEPENDS):\n" + "\n".join(broken)


def test_no_import_circle() -> None:
    # A package's __init__ and its own submodules are one unit for Python (importing a.b runs a/__init__).
    edges = {m: {t for t in targets if t not in _ancestors(m)} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}
    path: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


# Trust chain (issue 26, item 2): signatures are made and checked in the trust packages. A module elsewhere may
# name the key types (Ed25519PrivateKey/PublicKey, for annotations); any other Ed25519/serialization/signature
# primitive is imported only by these packages or by the modules listed with their reason.
TRUST_PACKAGES = ("edgefleet.kernel.trust", "edgefleet.device.trust", "edgefleet.flows.trust")
KEY_TYPES = {"Ed25519PrivateKey", "Ed25519PublicKey"}
SIGNING_PRIMITIVE_USERS = {
    "edgefleet.kernel.contracts.devicekey": "the device key record contract signs and checks its own records",
    "edgefleet.kernel.contracts.enrolment": "the enrolment contract signs and checks its own tokens and requests",
    "edgefleet.local.simfleet.shared_verify": "the simulator shares one signature check among its devices",
}
# The registry is storage; these still sign or judge through the registry writer's class chain (`ChannelMoves`,
# `stage_rollout`, the signed-pointer history). `base` (the writer reads a channel back through `check_pointer`,
# takes the default validity) and `moves` (a move refuses to build on a pointer the read-back did not trust) only
# read pointers back, never sign.
REGISTRY_TRUST_TIES = {"edgefleet.flows.registry.channels", "edgefleet.flows.registry.staged",
                       "edgefleet.flows.registry.history", "edgefleet.flows.registry.base",
                       "edgefleet.flows.registry.moves"}


def _signing_primitives(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cryptography"):
            if node.module == "cryptography" and all(a.name == "x509" for a in node.names):
                continue
            found += [f"{node.module}.{a.name}" for a in node.names if a.name not in KEY_TYPES]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "cryptography"]
    return found


def test_signing_primitives_stay_in_the_trust_packages() -> None:
    outside = sorted(f"{module}: {', '.join(names)}" for module, path in MODULES.items()
                     if not module.startswith(TRUST_PACKAGES) and module not in SIGNING_PRIMITIVE_USERS
                     and (names := _signing_primitives(path)))
    assert not outside, "sign or verify in edgefleet.{kernel,device,flows}.trust, not here:\n" + "\n".join(outside)
    assert set(SIGNING_PRIMITIVE_USERS) <= set(MODULES), "SIGNING_PRIMITIVE_USERS names a module that is gone"


def test_the_registry_stores_and_the_trust_packages_judge() -> None:
    registries = ("edgefleet.device.registry", "edgefleet.flows.registry")
    tied = {module for module, targets in GRAPH.items() if module.startswith(registries)
            and any(t.startswith(TRUST_PACKAGES[2]) or t == "edgefleet.device.trust.pointers" for t in targets)}
    assert tied <= REGISTRY_TRUST_TIES, f"the registry signs or judges pointers in {sorted(tied - REGISTRY_TRUST_TIES)}"
    assert not any(t.startswith("edgefleet.flows") for m, ts in GRAPH.items()
                   if m.startswith(TRUST_PACKAGES[:2]) for t in ts), "the verify side imports the pipelines"


def test_the_sign_side_sits_below_the_pipelines_that_sign() -> None:
    """The release, rollouts, promotion and channel re-signing all sign through `edgefleet.flows.trust`; it reads
    its settings from its own `signing_params` and stores through the registry, never from a pipeline stage."""
    above = {t for m, ts in GRAPH.items() if m.startswith(TRUST_PACKAGES[2]) for t in ts
             if t.startswith("edgefleet.flows.") and not t.startswith((TRUST_PACKAGES[2], "edgefleet.flows.registry"))}
    assert not above, f"edgefleet.flows.trust imports a pipeline stage: {sorted(above)}"


# Modules started from outside the package's imports, and how; every other module must be imported by one.
ENTRY_POINTS = {
    "edgefleet.cli.__main__": "python -m edgefleet.cli",
    "edgefleet.demo": "python -m edgefleet.demo (make demo)",
    "edgefleet.local.sandbox": "python -m edgefleet.local.sandbox (make sandbox)",
    "edgefleet.infra.__main__": "Pulumi.yaml (pulumi up)",
    "edgefleet.flows.monitor.flow": "prefect.yaml deployment fleet-monitor",
    "edgefleet.flows.monitor.overview": "prefect.yaml deployment fleet-overview",
    "edgefleet.local.postgres": "tests/monitor and bench.status_bench (a throw-away PostgreSQL 15 server)",
    "edgefleet.local.simfleet": "bench.fleet_sim_bench and tests/flows/rollout (the fleet simulator)",
    "edgefleet.local.simfleet.world": "bench.fleet_sim_bench and tests/flows/rollout (the simulated fleet's registry)",
}


def test_nothing_is_unconnected() -> None:
    imported = {target for targets in GRAPH.values() for target in targets}
    lonely = sorted(m for m in MODULES
                    if m not in ENTRY_POINTS and not ({m} | _descendants(m)) & (imported | set(ENTRY_POINTS)))
    assert not lonely, f"modules nothing imports (an entry point? list it in ENTRY_POINTS): {lonely}"
    assert set(ENTRY_POINTS) <= set(MODULES), "ENTRY_POINTS names a module that is gone"


# Tests mirror the code (issue 26 item 5): the test of `edgefleet.a.b.c` is `tests/a/b/test_c.py`, or
# `tests/a/b/test_c_<aspect>.py` when one module has several (the module's name first). Two folders cut across the
# packages: tests/security/ (attack tests, named after the attack) and tests/e2e/ (end-to-end tests spanning
# packages). At tests/ itself: the namespace's own modules (test_demo*.py) and the whole-repository checks below.
CROSS_CUTTING_TESTS = {"security": "attack tests, named after the attack", "e2e": "end-to-end tests spanning packages"}
REPOSITORY_TESTS = {
    "test_architecture.py": "this file: the repository's structure",
    "test_packaging.py": "the four distributions' wheels and the device's light install",
    "test_packaging_pythons.py": "the device distribution resolved per Python and CPU",
    "test_device_python39.py": "the device side on Python 3.9",
}
TESTS = REPO / "tests"


def _mirror_folders() -> dict[str, set[str]]:
    """Each folder of tests/ a package mirrors ("" = tests/, the namespace) -> the names its test files may take:
    the package's modules (`__main__` as `main`), and the package itself when its __init__ holds code."""
    packages = {m for m, path in MODULES.items() if path.name == "__init__.py"} | {ROOT}
    folders: dict[str, set[str]] = {}
    for package in packages:
        names = {m.rpartition(".")[2] for m in MODULES if m.rpartition(".")[0] == package and m not in packages}
        names = {"main" if name == "__main__" else name for name in names}
        if package != ROOT and any(isinstance(node, (ast.FunctionDef, ast.ClassDef))
                                   for node in ast.parse(MODULES[package].read_text()).body):
            names.add(package.rpartition(".")[2])
        folders["/".join(package.split(".")[1:])] = names
    return folders


def _misplaced_tests() -> list[str]:
    folders = _mirror_folders()
    misplaced = []
    for path in sorted(TESTS.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or ".pytest_cache" in path.parts:
            continue
        relative = path.relative_to(TESTS)
        folder = relative.parent.as_posix() if relative.parent != Path(".") else ""
        where = f"tests/{folder}/" if folder else "tests/"
        if relative.parts[0] in CROSS_CUTTING_TESTS and len(relative.parts) > 1:
            continue
        if not (path.name.startswith("test_") and path.suffix == ".py"):
            continue  # conftest.py, __init__.py, helpers: anywhere (a folder of helpers only: tests/<package>/support/)
        if folder not in folders:
            misplaced.append(f"tests/{relative}: {where} mirrors no package")
        elif not (folder == "" and path.name in REPOSITORY_TESTS):
            stem = path.stem.removeprefix("test_")
            if not any(stem == name or stem.startswith(f"{name}_") for name in folders[folder]):
                package = ".".join([ROOT, *folder.split("/")]) if folder else ROOT
                misplaced.append(f"tests/{relative}: named after no module of {package} (test_<module>[_<aspect>].py)")
    return misplaced


def test_tests_mirror_the_code() -> None:
    """A test file is where a newcomer looks for it: in the folder mirroring the module's package, named after the
    module. Files not named test_*.py (conftest.py, __init__.py, helper modules, stand-in sources) may sit beside
    the tests that use them or in a folder of helpers only (tests/<package>/support/, say); tests/security/ and
    tests/e2e/ hold any test."""
    misplaced = _misplaced_tests()
    assert not misplaced, (
        "test files must mirror the code: the test of edgefleet.a.b.c is tests/a/b/test_c.py or test_c_<aspect>.py; "
        "attacks go to tests/security/, end-to-end tests spanning packages to tests/e2e/ (see CROSS_CUTTING_TESTS, "
        "REPOSITORY_TESTS):\n" + "\n".join(misplaced))
