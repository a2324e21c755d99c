"""Stand-ins for libedgetpu (which cannot be installed here), compiled once per session from
`runtime/standin_libedgetpu.c`: the real external-delegate ABI, one process at a time per TPU (an flock
beside the library, released when the process's last delegate is destroyed or it dies), with the faults of a
libedgetpu built for another runtime (segfault or hang at interpreter creation, selected by
STANDIN_EDGETPU_FAULT) and a build that fails to load (an unresolved symbol)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

STANDIN_SOURCE = Path(__file__).parent / "runtime" / "standin_libedgetpu.c"


def _compile(directory: Path, *defines: str) -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the libedgetpu stand-in")
    library = directory / "libedgetpu.so.1"
    # Its TPUs' locks live beside it: one per session, so a delegate a test leaves alive holds the "TPU" into
    # the next test, as the real one would (STANDIN_EDGETPU_LOCK_DIR overrides).
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", f'-DSTANDIN_LOCK_DIR="{directory}"', *defines,
                    "-o", str(library), str(STANDIN_SOURCE)], check=True, timeout=60)
    return str(library)


@pytest.fixture(scope="session")
def standin_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The stand-in libedgetpu.so.1; TPUs "attached" per STANDIN_EDGETPU_DEVICES, faults per
    STANDIN_EDGETPU_FAULT (segv | hang)."""
    return _compile(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="session")
def unloadable_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A libedgetpu.so.1 that dlopen refuses (undefined symbol), like a build for another system."""
    return _compile(tmp_path_factory.mktemp("standin-unresolved"), "-DSTANDIN_UNRESOLVED")


@pytest.fixture
def build_standin():
    """Compiles a stand-in build (`directory`/libedgetpu.so.1, with C `defines`), e.g. a second build to install
    over a loaded one."""
    return _compile


@pytest.fixture
def tpu(monkeypatch: pytest.MonkeyPatch):
    """A stand-in Edge TPU attached on usb:0; returns a setter of the stand-in's fault (segv | hang), which
    the probe's child process inherits."""
    monkeypatch.setenv("STANDIN_EDGETPU_DEVICES", "usb:0")
    monkeypatch.delenv("STANDIN_EDGETPU_FAULT", raising=False)
    return lambda fault: monkeypatch.setenv("STANDIN_EDGETPU_FAULT", fault)

from tests.device.agent.conftest import releases  # noqa: E402,F401 - fixtures of the moved-in tests
