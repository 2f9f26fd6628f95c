"""Schemathesis: `specsearch serve` conforms to TGI's OpenAPI document (implemented routes).

The fixture is TGI's docs/openapi.json unmodified; it declares OpenAPI 3.0.3 but uses 3.1
keywords (numeric `exclusiveMinimum`), so it is read here as 3.1: version set to 3.1.0,
`nullable: true` turned into a "null" alternative, and event-stream schemas applied to each
event's JSON `data`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from langgraph_specsearch.serve import background_server, build_tiny_model, create_app

SPEC = Path(__file__).parent / "fixtures" / "tgi_openapi.json"
IMPLEMENTED = ["/", "/generate", "/generate_stream", "/info", "/health", "/tokenize"]


def as_openapi_31(node: Any) -> Any:
    """OpenAPI 3.0 `nullable` -> a JSON-Schema "null" alternative (recursively)."""
    if isinstance(node, list):
        return [as_openapi_31(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: as_openapi_31(value) for key, value in node.items()}
    if out.pop("nullable", False):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif "$ref" in out or "allOf" in out or "oneOf" in out:
            keep = {k: out.pop(k) for k in ("$ref", "allOf", "oneOf") if k in out}
            out["anyOf"] = [keep, {"type": "null"}]
    return out


def sse_events(node: Any) -> Any:
    """TGI documents an event stream by its payload's schema; schemathesis validates each
    event object (`data`, `event`, ...), so the payload schema moves to `data`'s content."""
    if isinstance(node, list):
        return [sse_events(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: sse_events(value) for key, value in node.items()}
    stream = out.get("text/event-stream")
    if isinstance(stream, dict) and "schema" in stream:
        payload = stream["schema"]
        stream["schema"] = {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": payload,
                }
            },
        }
    return out


def load_schema() -> Any:
    raw = json.loads(SPEC.read_text())
    doc = copy.deepcopy(raw)
    doc["openapi"] = "3.1.0"
    doc["components"] = as_openapi_31(doc["components"])
    doc["paths"] = {path: sse_events(as_openapi_31(doc["paths"][path])) for path in IMPLEMENTED}
    loaded = schemathesis.openapi.from_dict(doc)
    # Schema-valid requests only: TGI's document does not list the 422 that /tokenize (like
    # any route) gives a malformed body, nor the 405 of undeclared methods.
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE])  # type: ignore[list-item]
    return loaded


schema = load_schema()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    model, tokenizer = build_tiny_model()
    # Small limits keep every generation short: max_new_tokens is validated against them.
    app = create_app(model, tokenizer, model_id="tiny", max_input_tokens=24, max_total_tokens=32)
    with background_server(app) as url:
        yield url


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_conforms_to_tgi_openapi(case: Any, base_url: str) -> None:
    response = case.call(base_url=base_url, timeout=60)
    assert response.status_code < 500, response.text
    # Schema-valid requests may still exceed this server's limits (max_total_tokens, ...)
    # and get TGI's 422, so "positive data acceptance" is not checked.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


def test_speculative_responses_conform() -> None:
    """With a draft model, `details` gains `accepted_draft_tokens` / `target_calls`, still valid."""
    model, tokenizer = build_tiny_model()
    draft, _ = build_tiny_model(seed=1)
    app = create_app(
        model,
        tokenizer,
        model_id="tiny",
        draft=(draft, tokenizer),
        max_input_tokens=24,
        max_total_tokens=32,
    )
    sampled = {"do_sample": True, "temperature": 0.7, "seed": 3}
    with background_server(app) as url:
        for path in ("/generate", "/generate_stream"):
            for extra in ({}, sampled):
                params: dict[str, Any] = {"max_new_tokens": 6, "details": True, **extra}
                body = {"inputs": "Natalia", "parameters": params}
                case = schema[path]["POST"].Case(body=body, media_type="application/json")
                response = case.call(base_url=url, timeout=60)
                case.validate_response(response, excluded_checks=[positive_data_acceptance])
                assert "accepted_draft_tokens" in response.text
