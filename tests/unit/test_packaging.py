"""What the wheel installs, checked without building it (tests/integration/test_wheel.py builds it).

pyproject.toml lists the packages (rather than finding them) because the top-level `schemas/`
folder is installed as `streams.schemas`; these tests catch a subpackage left out of that list.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from streams.resources import default_policy_path, schema_dir

REPO = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_under_streams_is_listed() -> None:
    """Every folder holding a module, with or without __init__.py (setuptools installs only the
    listed ones)."""
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "streams").rglob("*.py")}
    missing = sorted(on_disk - set(SETUPTOOLS["packages"]))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_schemas_folder_is_the_package_streams_schemas() -> None:
    assert "streams.schemas" in SETUPTOOLS["packages"]
    assert SETUPTOOLS["package-dir"] == {"streams.schemas": "schemas"}
    assert (REPO / "schemas" / "__init__.py").is_file()
    assert not (REPO / "streams" / "schemas").exists(), "a second copy of the schemas"
    assert SETUPTOOLS["package-data"]["streams.schemas"] == ["*.schema.json"]
    assert SETUPTOOLS["package-data"]["streams.policy"] == ["*.toml"]


def test_resources_resolve_to_the_checkout_files() -> None:
    assert schema_dir() == REPO / "schemas"
    assert default_policy_path() == REPO / "streams" / "policy" / "default_policy.toml"
