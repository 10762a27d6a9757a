"""`GET /healthz`: is the process up and can it reach its event store?"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from infrastructure.bootstrap import VERSION, Services


async def healthz(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    mode = "embedded" if services.settings.embedded else "production"
    try:
        position = await run_in_threadpool(services.commerce.recorder.max_notification_id)
    except Exception as error:  # any storage failure means "not healthy", never a 500
        return JSONResponse(
            {
                "status": "unavailable",
                "mode": mode,
                "version": VERSION,
                "detail": type(error).__name__,
            },
            status_code=503,
        )
    return JSONResponse(
        {"status": "ok", "mode": mode, "version": VERSION, "eventStorePosition": position or 0}
    )
