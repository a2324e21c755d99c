"""Status-file writes that land on the agent root's filesystem (issue 24, item 3), before and after the runtime
directory: on a Raspberry Pi the root is on the SD card, where each rewrite of status.json or shadow.json is a
flash write; under deploy-agent's unit they go to /run (a tmpfs) instead.

The real agent runs in this process on 640x480 frames at `FPS` (a camera's rate), MobileNet v1 on the CPU,
summary telemetry to the local sink, a shadow candidate on a tenth of the frames (shadow.json rewritten every
`shadow.report_interval_s`), status.interval_s and the rest at their defaults. Twice: files in the root
(`runtime_dir` = the root: what every agent did before), then in a runtime directory on a tmpfs (/dev/shm,
standing in for /run). Every rename into the root and into the runtime directory is counted with inotify
(IN_MOVED_TO: each atomic rewrite ends in one), over `seconds` after a warm-up.

Run: `python -m bench.status_writes [--seconds S]`, or `python -m bench.agent_bench --only status-writes`
(`--only all` runs it too).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgefleet.device.agent.config import AgentConfig, load_config
from edgefleet.device.agent.loop import Agent
from edgefleet.device.agent.runtime_files import RUNTIME_FILES
from edgefleet.device.agent.shadow import set_shadow
from edgefleet.device.runtime.engine import Engine
from edgefleet.device.runtime.golden import compute_golden
from edgefleet.device.store import ModelStore
from edgefleet.flows.release.bundle import create_version_dir
from edgefleet.kernel.contracts.status import read_status
from edgefleet.kernel.trust.signatures import generate_keypair, key_id, save_public_key

MODEL_FILE = "mobilenet_v1_0.25_128_quant.tflite"
IMAGES = ("cat.bmp", "parrot.jpg", "grace_hopper.bmp")
FPS = 30
SHADOW_SHARE = 0.1
WARMUP_S = 3.0
DEFAULT_SECONDS = 30.0
TMPFS = Path("/dev/shm")  # a tmpfs on every Linux, as /run is
IN_MOVED_TO = 0x00000080
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
Row = tuple[str, str, str, str]


class RenameCounter:
    """Renames into directories (inotify IN_MOVED_TO), by (directory, name)."""

    def __init__(self, directories: tuple[Path, ...]) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._dirs = {}
        for directory in directories:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), IN_MOVED_TO)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
            self._dirs[wd] = directory

    def take(self) -> Counter[tuple[Path, str]]:
        """The renames since the last call."""
        counts: Counter[tuple[Path, str]] = Counter()
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return counts
            offset = 0
            while offset < len(data):
                wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0").decode()
                counts[(self._dirs[wd], name)] += 1
                offset += _EVENT.size + length

    def close(self) -> None:
        os.close(self._fd)


def _release(coral: Path, work: Path, version: str, private_key) -> Path:  # noqa: ANN001
    with Engine.open(coral / MODEL_FILE) as engine:
        golden = compute_golden(engine, (1, 2))
    release = work / f"release-{version}-{key_id(private_key.public_key())}"
    create_version_dir(release, {"model_cpu.tflite": coral / MODEL_FILE, "labels.txt": coral / "imagenet_labels.txt"},
                       private_key=private_key, model="imagenet", version=version, golden=golden)
    return release


def agent_config(coral: Path, work: Path, name: str, runtime_dir: Path) -> AgentConfig:
    """1.0.0 active and 1.0.1 as the shadow candidate in a fresh store; the agent's config."""
    private_key, public_key = generate_keypair()
    root = work / name
    save_public_key(public_key, root / "keys" / "release.pub")
    store = ModelStore(root, public_key=public_key)
    for version in ("1.0.0", "1.0.1"):
        store.install(_release(coral, work, version, private_key))
    store.activate("imagenet", "1.0.0")
    set_shadow(store, "imagenet", "1.0.1")
    frames = work / "frames"
    frames.mkdir(exist_ok=True)
    for image in IMAGES:
        shutil.copy(coral / image, frames / image)
    path = work / f"{name}.yaml"
    path.write_text(f"device_id: bench-{name}\nmodel: imagenet\nroot: {root}\nruntime_dir: {runtime_dir}\n"
                    f"inference: {{device: cpu}}\ntelemetry: {{mode: summary}}\nshadow: {{share: {SHADOW_SHARE}}}\n"
                    f"source: {{kind: images, path: {frames}, max_fps: {FPS}, frame_width: 640, frame_height: 480}}\n")
    return load_config(path)


def _frames(config: AgentConfig) -> int:
    return read_status(config.status_path).frames if config.status_path.exists() else 0


def measure(config: AgentConfig, seconds: float) -> tuple[Counter[tuple[Path, str]], float]:
    """Renames into the root and the runtime directory while the agent runs `seconds` after its warm-up."""
    config.runtime_path.mkdir(parents=True, exist_ok=True)
    counter = RenameCounter(tuple({config.root, config.runtime_path}))
    stop = threading.Event()
    thread = threading.Thread(target=Agent(config).run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while _frames(config) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(WARMUP_S)
        counter.take()  # the start (the link, `starting`, `running`) is not the steady state
        started = time.monotonic()
        time.sleep(seconds)
        counts, elapsed = counter.take(), time.monotonic() - started
    finally:
        stop.set()
        thread.join(60)
        counter.close()
    return counts, elapsed


def run(coral: Path, work: Path, seconds: float) -> list[Row]:
    rows = []
    runtime_base = Path(tempfile.mkdtemp(prefix="edgefleet-run-", dir=TMPFS if TMPFS.is_dir() else None))
    try:
        for label, name in (("before: in the agent root", "in-root"), ("after: runtime directory", "runtime")):
            root = work / name
            config = agent_config(coral, work, name, root if name == "in-root" else runtime_base / name)
            counts, elapsed = measure(config, seconds)
            on_root = {file: counts[(config.root, file)] / elapsed for file in RUNTIME_FILES}
            on_tmpfs = sum(counts[(config.runtime_path, file)] for file in RUNTIME_FILES) / elapsed \
                if config.runtime_path != config.root else 0.0
            rows.append((f"status writes on the root filesystem, {label}",
                         f"{sum(on_root.values()):.2f} writes/s",
                         ", ".join(f"{file} {rate:.2f}/s" for file, rate in on_root.items()),
                         f"on the tmpfs {on_tmpfs:.2f}/s; {FPS} fps, shadow share {SHADOW_SHARE}, {elapsed:.0f} s"))
    finally:
        shutil.rmtree(runtime_base, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    from bench.agent_bench import CORAL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="measured window per run")
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    table = Table(title="status.json / shadow.json rewrites (issue 24, item 3)")
    for column in ("measure", "result", "per file", "notes"):
        table.add_column(column)
    with tempfile.TemporaryDirectory() as temp:
        for row in run(CORAL, Path(temp), args.seconds):
            table.add_row(*row)
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
