"""Package mapping only; everything else is in pyproject.toml.

The project card fixes the top-level folders (device/, flows/, infra/). They install under the one
`edgefleet` namespace (edgefleet.device, edgefleet.flows, edgefleet.infra) so a Coral device never gets
a bare `device` package in its site-packages.
"""

from setuptools import find_packages, setup

FOLDERS = {"edgefleet": "edgefleet", "edgefleet.device": "device", "edgefleet.flows": "flows",
           "edgefleet.infra": "infra"}

packages = []
for package, folder in FOLDERS.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=FOLDERS,
      package_data={"edgefleet.device": ["py.typed", "data/*"], "edgefleet.device.contracts": ["*.avsc"],
                    "edgefleet.flows": ["templates/*"]})
