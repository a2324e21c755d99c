"""Options every `edgefleet-agent` command spells the same way (typer `Annotated` types)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edgefleet.kernel.contracts.layout import AGENT_ROOT_ENV, DEFAULT_AGENT_ROOT

RootOption = Annotated[Optional[Path], typer.Option(
    "--root", envvar=AGENT_ROOT_ENV, help=f"agent root directory (default: ${AGENT_ROOT_ENV} or {DEFAULT_AGENT_ROOT})")]
ConfigOption = Annotated[Optional[Path], typer.Option(
    "--config", "-c", help="agent.yaml: the agent root and release key it names (deploy-agent: "
    "<install_dir>/etc/<device id>/agent.yaml); default <root>/agent.yaml")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON")]
