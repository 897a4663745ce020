"""live-commerce-streams: Douyin 2020 live-selling rules as a Faust stream processor.

`faust -A streams worker` reads the attribute `app`; it is built lazily so that the pure policy
core (`streams.policy`) can be imported without Faust.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from streams.faust_app import app

        return app
    raise AttributeError(name)
