"""Schemathesis fuzzes every operation of the OpenAPI schema in-process: no 500s, ever,
and every response matches the documented schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from service.app import create_app
from service.settings import Settings

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def api_schema(tiny_embedder, tmp_path_factory):
    app_settings = Settings(
        preset="tiny",
        data_dir=tmp_path_factory.mktemp("fuzz"),
        max_inputs_per_request=8,
        max_upload_bytes=256 * 1024,
        max_request_bytes=1024 * 1024,
        # schemathesis's in-process client sends a Host of its own; the Host check has
        # its own tests (test_origin.py), this one fuzzes the operations behind it
        allowed_hosts=["*"],
    )
    app = create_app(app_settings, embedder=tiny_embedder)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_survives_fuzzing(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case):
            response = case.call()
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

        try:
            fuzz()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
