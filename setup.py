"""Package mapping only; everything else is in pyproject.toml.

One rule: top-level folder X is the package `edgefleet.X` (kernel/, device/, flows/, monitor/, local/, cli/,
infra/), and `edgefleet/` itself is the root package `edgefleet`. They install under the one `edgefleet`
namespace so a Coral device never gets a bare `device` package in its site-packages. `tests/` and `bench/`
are not installed; they import as themselves.
"""

from setuptools import find_packages, setup

FOLDERS = {"edgefleet": "edgefleet", "edgefleet.kernel": "kernel", "edgefleet.device": "device",
           "edgefleet.flows": "flows", "edgefleet.monitor": "monitor", "edgefleet.local": "local",
           "edgefleet.cli": "cli", "edgefleet.infra": "infra"}

packages = []
for package, folder in FOLDERS.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=FOLDERS,
      package_data={"edgefleet.device": ["py.typed", "data/*"], "edgefleet.kernel.contracts": ["*.avsc"],
                    "edgefleet.flows": ["templates/*", "locks/*"]})
