"""synthjax's build: metadata and dependencies are in pyproject.toml; this file only maps the
top-level gin_configs/ into the package, so a wheel carries its presets as synthjax/gin_configs
while the repository keeps them at the top, where t5x users look for them."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["synthjax", "synthjax.*"]) + ["synthjax.gin_configs"],
    package_dir={"synthjax.gin_configs": "gin_configs"},
    package_data={
        "synthjax.generate": ["templates/*.json"],
        "synthjax.gin_configs": ["*.gin", "*/*.gin"],
    },
)
