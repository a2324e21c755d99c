"""The spot check's outbox: samples waiting for upload, in a directory under the agent root, bounded.

Each sample is `<frame_id>.jpg` and `<frame_id>.json` (`edgefleet.kernel.contracts.spotcheck.SpotSample`), the
JSON written last: a JPEG without its JSON (a power cut between the two) is an unfinished sample, removed when
the outbox opens. At most `max_samples` samples and `max_bytes` bytes wait: adding beyond either drops the
oldest first, counted in `dropped`. Only files named like a frame id are read, so nothing else in the directory
is ever uploaded. One thread uses an outbox (the spot check's own): no locking.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

from edgefleet.kernel.contracts.spotcheck import IMAGE_SUFFIX, RECORD_SUFFIX, check_frame_id
from edgefleet.kernel.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

OUTBOX_DIR = "spotcheck-outbox"
"""Under the agent root."""


def _frame_of(path: Path) -> str | None:
    try:
        return check_frame_id(path.stem)
    except ValueError:
        return None


class Outbox:
    """Samples waiting for upload, oldest first (see the module doc).

    Args:
        directory: the outbox directory (made when missing, mode 0700: frames are private until uploaded).
        max_samples: samples kept at most.
        max_bytes: bytes (JPEG + JSON) kept at most.
    """

    def __init__(self, directory: Path, max_samples: int, max_bytes: int) -> None:
        if max_samples < 1 or max_bytes < 1:
            raise ValueError(f"outbox bounds must be at least 1, got {max_samples} samples, {max_bytes} bytes")
        self.directory = directory
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.dropped = 0
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._bytes = 0
        self._scan()

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _paths(self, frame: str) -> tuple[Path, Path]:
        return self.directory / (frame + IMAGE_SUFFIX), self.directory / (frame + RECORD_SUFFIX)

    def _scan(self) -> None:
        """Reads what a previous run left: complete samples in frame order; unfinished ones removed."""
        complete: dict[str, int] = {}
        for path in self.directory.glob("*" + RECORD_SUFFIX):
            frame = _frame_of(path)
            image = self.directory / (path.stem + IMAGE_SUFFIX)
            if frame is not None and image.is_file():
                complete[frame] = image.stat().st_size + path.stat().st_size
        for path in self.directory.glob("*" + IMAGE_SUFFIX):
            frame = _frame_of(path)
            if frame is not None and frame not in complete:
                path.unlink(missing_ok=True)  # an unfinished sample: its JSON never came
        for frame in sorted(complete):
            self._sizes[frame] = complete[frame]
            self._bytes += complete[frame]
        self._make_room(0)

    def add(self, frame: str, image: bytes, record: bytes) -> None:
        """Adds a sample, first dropping the oldest until it fits (a sample bigger than `max_bytes` alone is
        dropped itself, counted)."""
        size = len(image) + len(record)
        if size > self.max_bytes:
            self.dropped += 1
            return
        if frame in self._sizes:  # the same frame id again (a restart within the second): the new one replaces it
            self.remove(frame)
        self._make_room(size)
        image_path, record_path = self._paths(check_frame_id(frame))
        atomic_write_bytes(image_path, image, mode=0o600)
        atomic_write_bytes(record_path, record, mode=0o600)
        self._sizes[frame] = size
        self._bytes += size

    def _make_room(self, size: int) -> None:
        while self._sizes and (len(self._sizes) + (1 if size else 0) > self.max_samples
                               or self._bytes + size > self.max_bytes):
            oldest = next(iter(self._sizes))
            self.remove(oldest)
            self.dropped += 1

    def oldest(self, count: int) -> list[str]:
        """Up to `count` frame ids, oldest first."""
        frames: list[str] = []
        for frame in self._sizes:
            if len(frames) >= count:
                break
            frames.append(frame)
        return frames

    def read(self, frame: str) -> tuple[bytes, bytes]:
        """(JPEG, JSON) of a waiting sample."""
        image_path, record_path = self._paths(frame)
        return image_path.read_bytes(), record_path.read_bytes()

    def remove(self, frame: str) -> None:
        """Forgets a sample (uploaded, dropped or unreadable): JSON first, so a crash leaves an unfinished one."""
        image_path, record_path = self._paths(frame)
        record_path.unlink(missing_ok=True)
        image_path.unlink(missing_ok=True)
        self._bytes -= self._sizes.pop(frame, 0)
