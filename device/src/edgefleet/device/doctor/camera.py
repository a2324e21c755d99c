"""`doctor`'s camera check (review of issue 22, item 6): with `source.kind: camera` the agent's user must be in
the `video` group, which owns `/dev/video*` on Debian and Raspberry Pi OS (deploy-agent adds it:
flows/deploy_agent/device_access.py), and the camera's node must be there for it to open.

`doctor` runs as the agent's user in a rollout's preflight (`sudo -u <agent_user>`), so the groups it checks are
this process's. The decision is pure (`camera_finding`); `camera_findings` reads the user, node and access.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from edgefleet.device.agent.config import CameraSourceConfig
from edgefleet.kernel.findings import Finding, Status

CAMERA_CHECK = "camera"
CAMERA_GROUP = "video"
ROOT_UID = 0


@dataclass(frozen=True)
class CameraHost:
    """What the check reads on the host: who runs it and the camera's node."""

    user: str
    root: bool
    groups: frozenset[str]
    node: Path
    node_exists: bool
    node_openable: bool


def camera_finding(host: CameraHost) -> Finding:
    """Can the agent's user open its camera: in `video` (root opens any node), and the node there and usable."""
    if not host.root and CAMERA_GROUP not in host.groups:
        return _camera_fails(
            f"user {host.user} is not in the {CAMERA_GROUP} group (groups: {', '.join(sorted(host.groups)) or 'none'})"
            f": the agent cannot open {host.node} (source.kind: camera)",
            f"re-run deploy-agent (it adds the agent's user to {CAMERA_GROUP} for a camera source), or: sudo usermod "
            f"-aG {CAMERA_GROUP} {host.user} && sudo systemctl restart the agent's unit")
    if not host.node_exists:
        return _camera_fails(
            f"no {host.node}: no camera at source.camera_index {host.node.name.removeprefix('video')}",
            "attach the camera (and enable it: libcamera / raspi-config on a Pi), or set source.camera_index to "
            f"one of `ls {host.node.parent}/video*`")
    if not host.node_openable:
        return _camera_fails(
            f"user {host.user} cannot open {host.node} although in {CAMERA_GROUP}",
            f"check its owner and mode (`ls -l {host.node}`: group {CAMERA_GROUP}, rw for the group, as udev sets "
            "it), then replug the camera")
    who = "root (opens every node)" if host.root else f"user {host.user}, in {CAMERA_GROUP},"
    return Finding(name=CAMERA_CHECK, status=Status.OK, detail=f"{who} can open {host.node}")


def _camera_fails(detail: str, fix: str) -> Finding:
    return Finding(name=CAMERA_CHECK, status=Status.FAIL, detail=detail, fix=fix)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return str(uid)


def camera_findings(source: object, dev_root: Path, groups: set[str]) -> list[Finding]:
    """The camera line for a camera source (none for images or video files): `source` is the agent config's
    (`AgentConfig.source`); `groups` this process's."""
    if not isinstance(source, CameraSourceConfig):
        return []
    node = dev_root / f"video{source.camera_index}"
    uid = os.geteuid()
    return [camera_finding(CameraHost(
        user=_user_name(uid), root=uid == ROOT_UID, groups=frozenset(groups), node=node,
        node_exists=node.exists(), node_openable=os.access(node, os.R_OK | os.W_OK)))]
