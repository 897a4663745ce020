"""The package's version, read from its installed metadata (pyproject.toml is the one source)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("live-commerce-streams")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
