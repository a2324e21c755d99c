"""Reading a YAML configuration file into a mapping, with errors that name the file and the fix.

Every config of the project (agent, monitor, release, rollout, inventory) starts here, so a missing file,
a YAML syntax error or a document that is not a mapping reads the same everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from edgefleet.kernel.errors import ConfigError


def read_yaml_mapping(path: str | Path, what: str, *, missing_fix: str, shape_fix: str) -> dict[str, Any]:
    """Returns the YAML mapping in `path` (an empty file is an empty mapping).

    Args:
        path: the file.
        what: how to name it in errors, e.g. "agent config".
        missing_fix: what to do when the file does not exist.
        shape_fix: what to do when the document is not a mapping of keys to values.

    Raises:
        ConfigError: missing file, a directory, not UTF-8, unreadable, YAML syntax error, or not a mapping;
            each naming the file.
    """
    path = Path(path).expanduser()
    try:
        document = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{what} {path} does not exist", missing_fix) from error
    except IsADirectoryError as error:
        raise ConfigError(f"{what} {path} is a directory, not a file", missing_fix) from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {error.start}: {error.reason})",
                          "save the file as UTF-8") from error
    except PermissionError as error:
        raise ConfigError(f"{what} {path} cannot be read (permission denied)",
                          "check the file's permissions") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}",
                          "fix the syntax at the position shown") from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{what} {path} must be a mapping of keys to values", shape_fix)
    return document
