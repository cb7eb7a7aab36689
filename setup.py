"""The package and its configs: ``conf/`` of the checkout becomes the package data ``gpo_lab/conf`` of a wheel
(gpo_lab/config_dir.py finds either). Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["gpo_lab", "gpo_lab.*"]), "gpo_lab.conf"],
    package_dir={"gpo_lab.conf": "conf"},
    package_data={"gpo_lab.conf": ["*.yaml", "*/*.yaml"]},
)
