"""Health pages for orchestrators: /livez (the process serves) and /readyz (it consumes)."""

from __future__ import annotations

from typing import Any

from faust import web

from streams.faust_app import app


@app.page("/livez")
async def livez(self: web.View, request: web.Request) -> web.Response:
    return self.json({"status": "ok"})


@app.page("/readyz")
async def readyz(self: web.View, request: web.Request) -> web.Response:
    consumer: Any = app.consumer
    assigned = len(consumer.assignment()) if app.started else 0
    tables: Any = app.tables
    recovering = not tables.recovery.completed.is_set() if app.started else True
    body = {
        "assigned_partitions": assigned,
        "recovering": recovering,
        "rebalancing": app.rebalancing,
    }
    ready = app.started and not recovering and not app.rebalancing
    return self.json(body, status=200 if ready else 503)
