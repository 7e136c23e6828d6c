"""The packages to install (the rest of the project's metadata is in pyproject.toml): `keras_bat`
and every folder in it, found (a new encoder family is a folder under keras_bat/models/), and the
top-level `kernels/` folder under its import name, `keras_bat_kernels`."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["keras_bat", "keras_bat.*"]), "keras_bat_kernels"],
      package_dir={"keras_bat_kernels": "kernels"})
