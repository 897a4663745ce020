"""live-commerce-streams: Douyin 2020 live-selling rules as a Faust stream processor.

`faust -A streams worker` reads the attribute `app`; it is built on first access (see
`streams.compose`) so that the pure policy core (`streams.policy`) and the record step import
without Faust, settings or I/O.
"""

from typing import Any

_app: Any = None


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            from streams.compose import app_from_env

            _app = app_from_env()
        return _app
    raise AttributeError(name)
