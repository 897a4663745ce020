"""Installed as the package `streams.schemas` (pyproject.toml maps it to this folder).

This file only makes the folder a regular package, so that `importlib.resources.files()` returns
a real directory for it; the JSON files here are the one copy of the schemas.
"""
