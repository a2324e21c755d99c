"""Shared fixtures: the real emulators, the Coral test data, signing keys.

The Pub/Sub emulator is the official one (a JVM), started once per session on a free loopback port; tests
that stop it (outage tests) use `pubsub_emulator_private`, their own instance. The GCS emulator is
`gcp-storage-emulator`, in memory, in-process.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefleet.device.grpc_fork import disable_grpc_fork_handlers
from edgefleet.local.emulators import GcsEmulator, PubSubEmulator

# The model store's fixtures (release keys, signed versions, the store, the local and GCS registry writers) for
# every folder that tests what a device reads or the pipelines write: one registration here rather than a copy
# of the import list in each folder's conftest. A folder's own conftest still overrides a name (tests/monitor's
# `store` is the fleet store).
pytest_plugins = ["tests.device.store_fixtures"]

REPO = Path(__file__).resolve().parent.parent
# EDGEFLEET_CORAL_TEST_DATA: another place for it (a worktree, a copy of the repo elsewhere).
CORAL_TEST_DATA = Path(os.environ.get("EDGEFLEET_CORAL_TEST_DATA") or REPO.parent / "shared" / "coral-test-data")

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Tests fork processes (agents, CLIs) while their own Pub/Sub clients are busy: with gRPC's fork handlers on,
# a child can abort before `exec` (edgefleet.device.grpc_fork; grpc/grpc#43055, seen under Python 3.9).
disable_grpc_fork_handlers()


@pytest.fixture(scope="session")
def coral_data() -> Path:
    """`../shared/coral-test-data`: Google's published Coral test models and images (read-only)."""
    if not CORAL_TEST_DATA.is_dir():
        pytest.skip(f"{CORAL_TEST_DATA} is not here: the Coral test data lives beside the repo on CI machines")
    return CORAL_TEST_DATA


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """The official Pub/Sub emulator, shared by the session. Do not stop it in a test."""
    log_path = tmp_path_factory.mktemp("pubsub") / "emulator.log"
    with PubSubEmulator(log_path=log_path) as emulator:
        yield emulator


@pytest.fixture
def pubsub_env(pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> PubSubEmulator:
    """Points Google's Pub/Sub clients in this process at the shared emulator."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    return pubsub_emulator


@pytest.fixture
def pubsub_emulator_private(tmp_path: Path) -> Iterator[PubSubEmulator]:
    """A Pub/Sub emulator of the test's own, which the test may stop and restart."""
    with PubSubEmulator(log_path=tmp_path / "pubsub-emulator.log") as emulator:
        yield emulator


@pytest.fixture
def unique_name() -> str:
    """A short unique suffix for topics, subscriptions and buckets shared across tests."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A real, temporary Prefect API (SQLite) for the whole session: slow to start, so started once and
    shared by every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    # 300 s: Prefect's own wait counts only its polling sleeps; at load average 40 one worker's server took
    # longer than 120 s and every flow test on that worker erred at setup.
    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    """`gcp-storage-emulator` in memory, shared by the session."""
    with GcsEmulator() as emulator:
        yield emulator


@pytest.fixture
def gcs_env(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> GcsEmulator:
    """Points google-cloud-storage clients in this process at the GCS emulator."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    return gcs_emulator


# Longest first (CI time): `make test` runs the files on 2 workers (`--dist loadfile --no-loadscope-reorder`),
# each worker taking the next file as it finishes one. xdist's default order (most tests per file first) left
# the single-test end-to-end files to the end, so the last one (the demo, ~4 minutes) ran alone on one worker
# while the other idled. These files go first, then every file with a `slow` test, then the rest (short files
# fill the end). A file's tests keep their order; files were already independent of each other's order.
LONGEST_FILES = ("tests/test_demo.py", "tests/e2e/test_sandbox_ui.py", "tests/flows/rollout/test_flow_downgrade.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.relative_to(REPO).as_posix() if item.path.is_relative_to(REPO) else ""
        if name in LONGEST_FILES:
            return 0, LONGEST_FILES.index(name)
        return (1 if item.path in slow_files else 2), 0

    items.sort(key=rank)
