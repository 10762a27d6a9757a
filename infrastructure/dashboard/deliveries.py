"""The Deliveries page (§9): every delivery of the store, newest first, filtered by status
and webhook — where a merchant finds what failed, or is still being retried."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from infrastructure.dashboard.routes import PAGE_SIZE, Visit, list_page, signed_in, webhook_names
from infrastructure.queries import DELIVERY_STATUSES


def _deliveries(visit: Visit) -> Response:
    query = visit.request.query_params
    filters = {name: query.get(name, "").strip() for name in ("status", "webhook")}
    return list_page(
        visit,
        "deliveries",
        filters,
        lambda cursor: visit.queries.list_deliveries(
            visit.store_id,
            status=filters["status"] or None,
            webhook_id=filters["webhook"] or None,
            limit=PAGE_SIZE,
            cursor=cursor,
        ),
        lambda field: {"webhookId": "webhook", "status": "status"}.get(field or "", "cursor"),
        statuses=DELIVERY_STATUSES,
        webhooks=webhook_names(visit),
    )


def routes() -> list[Route]:
    return [Route("/deliveries", signed_in(_deliveries), methods=["GET"])]
