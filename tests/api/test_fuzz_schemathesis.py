"""Schemathesis against the app's own OpenAPI schema: no 5xx, every answer as documented.

Every operation is fuzzed in-process (ASGI) with positive and negative data: with a customer
token for the customer API, with an admin token for /api/admin. Path
parameters are sometimes swapped for ids of real resources of the caller, so the fuzz reaches
the code behind the 404. The schema is loaded from a second app instance: schemathesis runs
that app's lifespan on its own event loop, which must not replace the state of the app the
`client` fixture drives.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from tests.conftest import create_customer, unique_name

# Bounded and derandomized: the same cases on every run. Per operation: the coverage phase
# (boundary and just-invalid values of every parameter and field, positive and negative) and
# 20 fuzzed examples. Stateful link-following is off: it is slow and adds no new operation.
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20240601,
        "generation": {"max-examples": 20, "deterministic": True, "mode": "all"},
        "phases": {"coverage": {"enabled": True}, "stateful": {"enabled": False}},
    }
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
GATEWAY = "^/inference/"

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(), config=CONFIG)
customer_schema = schema.exclude(path_regex="^/api/admin").exclude(path_regex=GATEWAY)
admin_schema = schema.include(path_regex="^/api/admin")


@pytest.fixture(scope="module")
def owned(database: str, client: Any) -> dict[str, Any]:
    """A customer owning one of each resource the path parameters name."""
    owner = create_customer(f"fuzz-{unique_name()}")
    headers = owner["headers"]
    service = client.post(
        "/api/inference/services",
        json={"name": unique_name("fuzz"), "model_path": "/models/m", "framework": "onnx"},
        headers=headers,
    ).json()
    hook = client.post(
        "/api/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["job.failed"]},
        headers=headers,
    ).json()
    admin = create_customer("fuzz-admin", admin=True)
    return {
        "headers": headers,
        "admin_headers": admin["headers"],
        "ids": {
            "service_id": service["service_id"],
            "job_id": service["job_id"],
            "webhook_id": hook["id"],
            "number": 1,
        },
    }


def with_real_ids(case: Any, ids: dict[str, Any]) -> None:
    """Replace about half the generated path parameters with ids of real resources."""
    params = case.path_parameters or {}
    for name, value in list(params.items()):
        coin = hashlib.sha256(repr(value).encode()).digest()[0] % 2
        if name in ids and coin:
            params[name] = ids[name]


@customer_schema.parametrize()
def test_customer_api_conforms_to_its_schema(case: Any, owned: dict[str, Any]) -> None:
    with_real_ids(case, owned["ids"])
    case.call_and_validate(headers=owned["headers"], checks=CHECKS)


@admin_schema.parametrize()
def test_admin_api_conforms_to_its_schema(case: Any, owned: dict[str, Any]) -> None:
    with_real_ids(case, owned["ids"])
    case.call_and_validate(headers=owned["admin_headers"], checks=CHECKS)


def test_every_operation_is_fuzzed() -> None:
    """No operation escapes the two runs (the gateway is ASGI middleware, not in the schema)."""
    fuzzed = {
        op.ok().label for s in (customer_schema, admin_schema) for op in s.get_all_operations()
    }
    everything = {op.ok().label for op in schema.get_all_operations()}
    assert fuzzed == everything
    assert len(everything) >= 29
