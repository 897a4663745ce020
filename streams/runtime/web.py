"""Web pages on Faust's server: Prometheus metrics, /livez and /readyz for orchestrators."""

from __future__ import annotations

from typing import Any

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streams import metrics
from streams.runtime.app import StreamsApp


def add_pages(app: StreamsApp) -> None:
    @app.page("/metrics")
    async def metrics_page(self: web.View, request: web.Request) -> web.Response:
        metrics.NOT_READY_PARTITIONS.set(len(app.engine.assigned - set(app.engine.tasks)))
        return self.bytes(
            generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    @app.page("/livez")
    async def livez(self: web.View, request: web.Request) -> web.Response:
        return self.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(self: web.View, request: web.Request) -> web.Response:
        """Ready only while every assigned partition is being decided."""
        engine = app.engine
        consumer: Any = app.consumer
        assigned = len(consumer.assignment()) if app.started else 0
        body = {
            "assigned_partitions": assigned,
            "partitions_ready": sorted(engine.tasks),
            "partitions_not_ready": sorted(engine.assigned - set(engine.tasks)),
            "rebalancing": app.rebalancing,
        }
        ready = app.started and engine.ready and not app.rebalancing and bool(engine.assigned)
        return self.json(body, status=200 if ready else 503)
