"""The OpenAPI 3.1 document: served, valid, and in step with app/api/routes.py."""

from __future__ import annotations

from openapi_spec_validator import validate

from app.api.openapi import NOT_IN_API, OPERATIONS, SendBody, build
from app.api.routes import ROUTES

API = "/api/v1"


def _routes() -> set[tuple[str, str]]:
    return {(r.method, r.path) for r in ROUTES}


def test_every_route_is_documented_and_nothing_else():
    routes = _routes()
    documented = set(OPERATIONS)
    missing = routes - documented - NOT_IN_API
    assert not missing, f"routes missing from app/api/openapi.py OPERATIONS: {sorted(missing)}"
    extra = documented - routes
    assert not extra, f"documented routes that do not exist: {sorted(extra)}"
    assert not NOT_IN_API - routes, NOT_IN_API - routes
    assert not documented & NOT_IN_API
    # Only the web client and the metrics scrape stay out of the document.
    assert all(not path.startswith(API) for _m, path in NOT_IN_API)


def test_document_is_valid_openapi_3_1_built_from_the_structs():
    doc = build()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    n_ops = sum(len(v) for v in doc["paths"].values())
    assert n_ops == len(OPERATIONS)
    schemas = doc["components"]["schemas"]
    register = schemas["RegisterIn"]
    assert register["additionalProperties"] is False  # forbid_unknown_fields
    assert register["properties"]["password"]["minLength"] == 8
    # Sending over REST takes the conversation from the path.
    assert "conversation_id" not in schemas[SendBody.__name__]["properties"]
    history = doc["paths"][f"{API}/conversations/{{conversation_id}}/messages"]["get"]
    before = next(p for p in history["parameters"] if p["name"] == "before_seq")
    assert before["schema"] == {"type": "integer", "minimum": 0,
                                "maximum": 2**63 - 1}


async def test_served_at_api_v1_openapi_json(client):
    r = await client.get(f"{API}/openapi.json")
    assert r.status == 200 and r.content_type == "application/json"
    doc = await r.json()
    assert doc == build()
