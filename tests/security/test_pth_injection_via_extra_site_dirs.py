"""Issue 20 item 8: `extra_site_dirs` went verbatim into the venv's `.pth` file; Python runs a `.pth` line
that starts with `import` at every interpreter start, so a parameter ran code as root on the device (root runs
the venv's Python). Each entry is now an absolute normalised path: no line can start with `import`."""

from __future__ import annotations

import subprocess
import sys
import venv

import pytest
from pydantic import ValidationError

from edgefleet.flows.deploy_agent.params import DeployAgentParams, pth_text
from edgefleet.kernel.errors import ConfigError

BASE = {"inventory": "fleet.yaml", "public_key": "release.pub", "agent": {"model": "imagenet"}}
PAYLOAD = "import os; os.system('touch {marker}')"


def test_a_pth_line_starting_with_import_runs_code_at_interpreter_start(tmp_path):
    """The attack's mechanism, shown on a real venv: what the flow wrote became code."""
    venv.create(tmp_path / "venv", with_pip=False)
    marker = tmp_path / "pwned"
    site = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(f"{site}/evil.pth", "w") as handle:
        handle.write(PAYLOAD.format(marker=marker) + "\n")
    subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c", "pass"], check=True)
    assert marker.exists()


@pytest.mark.parametrize("entry", [PAYLOAD.format(marker="/tmp/x"), "/usr/lib/python3/dist-packages\nimport os",
                                   "relative/site-packages", "/opt/site packages", "/opt/./site", "/opt/site/"])
def test_extra_site_dirs_that_are_not_plain_absolute_paths_are_refused(entry):
    with pytest.raises(ValidationError, match="extra_site_dirs"):
        DeployAgentParams(**BASE, extra_site_dirs=(entry,))
    with pytest.raises(ConfigError, match="extra_site_dirs"):
        pth_text((entry,))  # the writer checks too, whoever calls it


def test_plain_directories_make_the_pth_file():
    assert pth_text(("/usr/lib/python3/dist-packages", sys.prefix)) == \
        f"/usr/lib/python3/dist-packages\n{sys.prefix}\n"
