"""The device wheel deploy-agent installs is built from a private copy of the source tree: setuptools builds in
the tree's `build/`, and two builds of one tree at once (two deploy runs, a run beside a test, CI building the
device wheel on three Pythons) overwrote each other's files there and failed (`error: subprocess-exited-with-error`
at a CI run of stop 31)."""

from __future__ import annotations

import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import edgefleet.device
from edgefleet.flows.deploy_agent.flow import build_leftovers, build_wheel
from edgefleet.kernel.errors import ConfigError

DEVICE_PROJECT = Path(edgefleet.device.__file__).resolve().parents[3]


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A copy of the device project, so the test sees exactly what a build writes into it."""
    tree = tmp_path / "device"
    shutil.copytree(DEVICE_PROJECT, tree, ignore=build_leftovers(DEVICE_PROJECT))
    return tree


def _listing(tree: Path) -> set[Path]:
    return {path.relative_to(tree) for path in tree.rglob("*")}


@pytest.mark.slow
def test_two_builds_of_one_tree_at_once_both_succeed_and_leave_the_tree_as_it_was(
        source_tree: Path, tmp_path: Path) -> None:
    before = _listing(source_tree)
    with ThreadPoolExecutor(2) as pool:
        wheels = list(pool.map(lambda n: build_wheel.fn(source_tree, tmp_path / f"out-{n}"), range(2)))
    assert _listing(source_tree) == before  # no build/, no egg-info: nothing another build could trip over
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            assert "edgefleet/device/agent/loop.py" in archive.namelist()


def test_a_directory_without_a_project_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no pyproject.toml"):
        build_wheel.fn(tmp_path, tmp_path / "out")


def test_only_the_top_levels_build_and_dist_are_left_out_of_the_copy(tmp_path: Path) -> None:
    """A package folder named `build` or `dist` deeper down is source: the copy keeps it (the wheel would build and
    fail at import on every device otherwise)."""
    ignore = build_leftovers(tmp_path)
    assert ignore(str(tmp_path), ["build", "dist", ".venv", "src", "x.egg-info"]) == {"build", "dist", ".venv",
                                                                                      "x.egg-info"}
    assert ignore(str(tmp_path / "src" / "edgefleet"), ["build", "dist", "__pycache__"]) == {"__pycache__"}
