"""gRPC's fork handlers off in the agent's process: the agent forks children (the Edge TPU probe) while its
Pub/Sub channel is busy.

With fork support on (grpcio's default since its EventEngine), a fork runs gRPC's `pthread_atfork` child handler,
which restarts the epoll poller thread in the child; `subprocess` then closes the child's descriptors before
`exec`, gRPC's epoll descriptor among them, and the child aborts with "epoll_wait error: Bad file descriptor"
before it becomes the program it was to run (grpc/grpc#43055, grpcio 1.80-1.83). Python 3.9 forks with
`fork()`, which runs those handlers; 3.10+ mostly uses `vfork()`, which does not, so it shows on Debian 11 /
Raspberry Pi OS Bullseye: an Edge TPU probe "crashing" (SIGABRT) sends a device to its CPU for nothing.

The agent's children never use gRPC, so the handlers have nothing to keep: `GRPC_ENABLE_FORK_SUPPORT=false`
(unless set otherwise), which gRPC reads when it is imported: before anything imports it.
"""

from __future__ import annotations

import os
import sys

FORK_SUPPORT_VARIABLE = "GRPC_ENABLE_FORK_SUPPORT"


def disable_grpc_fork_handlers() -> bool:
    """Turns gRPC's fork handlers off for this process (unless the variable is set already); False when gRPC
    was imported before (too late: the handlers are registered)."""
    os.environ.setdefault(FORK_SUPPORT_VARIABLE, "false")
    return "grpc" not in sys.modules
