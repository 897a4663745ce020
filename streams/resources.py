"""Files that travel with the package: the JSON Schemas and the default policy.

The schemas live in the repository's top-level `schemas/` (the one copy); pyproject.toml installs
that folder as the package `streams.schemas`, so an installed wheel finds them in its
site-packages and an editable install finds the checkout's folder. A checkout imported without
any install (e.g. PYTHONPATH=.) or through an editable install made before that mapping falls
back to `schemas/` beside the `streams/` folder.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SCHEMA_PACKAGE = "streams.schemas"
PROBE = "cart-adds.schema.json"


def schema_dir() -> Path:
    """The folder of `<topic>.schema.json` files: the packaged one, else the checkout's."""
    try:
        packaged = resources.files(SCHEMA_PACKAGE)
    except ModuleNotFoundError:
        packaged = None
    if isinstance(packaged, Path) and (packaged / PROBE).is_file():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "schemas"
    if (checkout / PROBE).is_file():
        return checkout
    if isinstance(packaged, Path):
        return packaged  # exists but incomplete: load_validators names the missing file
    raise RuntimeError(
        f"no JSON Schemas: package {SCHEMA_PACKAGE} is not installed as files and {checkout} "
        "does not exist; reinstall the package or set STREAMS_SCHEMA_DIR"
    )


def default_policy_path() -> Path:
    """The policy file shipped in `streams.policy` (what STREAMS_POLICY_FILE defaults to)."""
    path = resources.files("streams.policy").joinpath("default_policy.toml")
    if not isinstance(path, Path):
        raise RuntimeError(f"the package is not installed as files: {path}")
    return path
