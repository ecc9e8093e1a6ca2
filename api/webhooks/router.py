"""/api/webhooks: endpoints that receive signed events, their deliveries, the callback secret."""

from __future__ import annotations

import logging

from celery import Celery
from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentCustomer, SessionDep
from api.errors import error_responses
from api.validation import PUBLIC_ID_PATTERN, PathId
from api.webhooks import service
from api.webhooks.schemas import (
    CreateWebhookRequest,
    DeliveryPage,
    SigningSecret,
    TestQueued,
    WebhookCreated,
    WebhookList,
    WebhookOut,
)
from db.queue import DELIVER_WEBHOOK_TASK
from db.settings import get_settings

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/api/webhooks", tags=["webhooks"], responses=error_responses(401, 422, 503)
)


def _send_delivery(producer: Celery, delivery_id: int) -> None:
    try:
        producer.send_task(DELIVER_WEBHOOK_TASK, args=[delivery_id, 0], retry=False)
    except Exception as exc:  # the broker is down: the dispatcher sends it after its lease
        log.warning(
            "webhook delivery %s deferred to the dispatcher: %s", delivery_id, type(exc).__name__
        )


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=error_responses(
        400, 409, 413, 422, described={422: "invalid or unsafe url, unknown event type"}
    ),
)
async def create_webhook(
    body: CreateWebhookRequest, principal: CurrentCustomer, session: SessionDep
) -> WebhookCreated:
    """Register an endpoint; the answer holds its signing secret, shown only this once."""
    settings = get_settings()
    await run_in_threadpool(service.guard_url, "url", body.url, settings)
    created = await session.run_sync(service.create_webhook, principal.customer_id, body)
    await session.commit()
    return created


@router.get("", response_model=WebhookList)
async def list_webhooks(principal: CurrentCustomer, session: SessionDep) -> WebhookList:
    """The caller's endpoints, oldest first."""
    items = await session.run_sync(service.list_webhooks, principal.customer_id)
    return WebhookList(items=items)


@router.get("/signing-secret", response_model=SigningSecret)
async def get_signing_secret(principal: CurrentCustomer, session: SessionDep) -> SigningSecret:
    """The secret that signs deliveries to per-request `callback_url`s."""
    secret = await session.run_sync(service.signing_secret, principal.customer_id)
    await session.commit()  # a legacy-format secret is upgraded on first read
    return SigningSecret(secret=secret)


@router.post("/signing-secret/rotate", response_model=SigningSecret, responses=error_responses(409))
async def rotate_signing_secret(principal: CurrentCustomer, session: SessionDep) -> SigningSecret:
    """Replace the callback signing secret; every later attempt is signed with the new one."""
    secret = await session.run_sync(service.rotate_signing_secret, principal.customer_id)
    await session.commit()
    return SigningSecret(secret=secret)


@router.get("/deliveries", response_model=DeliveryPage)
async def list_all_deliveries(
    principal: CurrentCustomer,
    session: SessionDep,
    job_id: str | None = Query(None, max_length=64, pattern=PUBLIC_ID_PATTERN),
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=200),
) -> DeliveryPage:
    """Every delivery of the caller (endpoints and callback URLs), newest first."""
    return await session.run_sync(
        lambda s: service.list_deliveries(
            s, principal.customer_id, job_uuid=job_id, cursor=cursor, limit=limit
        )
    )


@router.get("/{webhook_id}", response_model=WebhookOut, responses=error_responses(404))
async def get_webhook(
    webhook_id: PathId, principal: CurrentCustomer, session: SessionDep
) -> WebhookOut:
    """One endpoint (without its secret)."""
    return await session.run_sync(
        lambda s: service.webhook_out(service.get_endpoint(s, principal.customer_id, webhook_id))
    )


@router.delete(
    "/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404, 409),
)
async def delete_webhook(
    webhook_id: PathId, principal: CurrentCustomer, session: SessionDep
) -> Response:
    """Stop sending to the endpoint; its pending deliveries are given up."""
    await session.run_sync(service.delete_webhook, principal.customer_id, webhook_id)
    await session.commit()
    return Response(status_code=204)


@router.post(
    "/{webhook_id}/test",
    status_code=202,
    response_model=TestQueued,
    responses=error_responses(404, 409),
)
async def test_webhook(
    webhook_id: PathId, request: Request, principal: CurrentCustomer, session: SessionDep
) -> TestQueued:
    """Queue a signed `webhook.test` delivery to the endpoint."""
    settings = get_settings()
    answer, delivery_id = await session.run_sync(
        service.queue_test, principal.customer_id, webhook_id, settings
    )
    await session.commit()
    await run_in_threadpool(_send_delivery, request.app.state.producer, delivery_id)
    return answer


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage, responses=error_responses(404))
async def list_deliveries(
    webhook_id: PathId,
    principal: CurrentCustomer,
    session: SessionDep,
    cursor: str | None = Query(None, max_length=200),
    limit: int = Query(50, ge=1, le=200),
) -> DeliveryPage:
    """The endpoint's deliveries with every attempt, newest first."""
    return await session.run_sync(
        lambda s: service.list_deliveries(
            s, principal.customer_id, webhook_uuid=webhook_id, cursor=cursor, limit=limit
        )
    )
