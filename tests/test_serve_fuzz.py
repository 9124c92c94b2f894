"""The server's OpenAPI schema, fuzzed: schemathesis sends what the schema allows and what it does not
(random bytes as images, wrong types, odd parameters, bodies of other kinds) to every endpoint; none may
answer 5xx, and every answer must be one the schema lists, in its shape (errors as {"error", "detail"}).
Examples are derived from a fixed seed, so a failure reproduces.

The cases come from schemathesis' Hypothesis strategies, run with `@given` inside a plain test: its
pytest plugin (`schemathesis.pytest.from_fixture`) fails on pytest 9 ("'Function' object has no
attribute '_nodeid'"), and building the app at import time would need a bundle before the fixtures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tlearn

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tlearn.serve.app import create_app  # noqa: E402

OPERATIONS = [("/predict", "POST"), ("/predict/batch", "POST"), ("/model", "GET"), ("/health", "GET")]
# Negative cases need something to break: the GET endpoints take no parameters, so they get positive ones only.
CASES = [(path, method, GenerationMode.POSITIVE) for path, method in OPERATIONS] + [
    (path, method, GenerationMode.NEGATIVE) for path, method in OPERATIONS if method == "POST"
]
EXAMPLES = 150  # per operation and mode: 600 requests, about 5 s on two cores


@pytest.fixture(scope="module")
def api_schema(tiny_bundle: Path) -> Any:
    app = create_app(tlearn.load(tiny_bundle), max_mb=0.25, max_batch=3, timeout=10)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_the_schema_lists_every_operation(api_schema: Any) -> None:
    listed = {(op.ok().path, op.ok().method.upper()) for op in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)  # a new endpoint is fuzzed too: add it to OPERATIONS


@pytest.mark.parametrize(("path", "method", "mode"), CASES, ids=[f"{m} {p} {g.value}" for p, m, g in CASES])
def test_no_request_is_a_server_error(api_schema: Any, path: str, method: str, mode: GenerationMode) -> None:
    seen: list[int] = []

    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(
            checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
        )
        seen.append(response.status_code)

    fuzz()
    assert seen and all(code < 500 for code in seen)
    print(f"\n{method} {path} ({mode.value}): {len(seen)} requests, statuses {sorted(set(seen))}")
