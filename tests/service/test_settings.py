"""Settings from MMEMBED_* variables, validated."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, default_data_dir


def test_environment_sets_every_option(monkeypatch, tmp_path):
    monkeypatch.setenv("MMEMBED_PRESET", "tiny")
    monkeypatch.setenv("MMEMBED_PORT", "9001")
    monkeypatch.setenv("MMEMBED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MMEMBED_MODALITIES", "text, audio")
    monkeypatch.setenv("MMEMBED_API_KEYS", "a,b")
    monkeypatch.setenv("MMEMBED_TEXT_ENCODER", "/models/minilm")
    monkeypatch.setenv("MMEMBED_MAX_BATCH_SIZE", "8")
    s = Settings()
    assert (s.preset, s.port, s.data_dir) == ("tiny", 9001, tmp_path)
    assert s.modalities == ["text", "audio"]
    assert [k.get_secret_value() for k in s.api_keys] == ["a", "b"]
    assert s.encoder_overrides == {"text": "/models/minilm"}
    assert s.max_batch_size == 8


def test_empty_variables_mean_unset(monkeypatch):
    # docker-compose passes `${MMEMBED_CHECKPOINT:-}` and `${MMEMBED_API_KEYS:-}` as "".
    monkeypatch.setenv("MMEMBED_CHECKPOINT", "")
    monkeypatch.setenv("MMEMBED_API_KEYS", "")
    s = Settings()
    assert s.checkpoint is None and s.api_keys == [] and not s.auth_enabled


def test_keyword_arguments_beat_the_environment(monkeypatch):
    monkeypatch.setenv("MMEMBED_PRESET", "base")
    assert Settings(preset="tiny").preset == "tiny"


def test_defaults_are_safe():
    s = Settings()
    assert s.host == "127.0.0.1" and s.preset == "base" and not s.allow_remote_without_key
    assert s.data_dir == default_data_dir() and s.data_dir.is_absolute()


def test_overrides_only_for_loaded_modalities():
    s = Settings(modalities="text", audio_encoder="/x", text_encoder="/y")
    assert s.encoder_overrides == {"text": "/y"}


def test_secrets_are_not_printed():
    assert "hunter2" not in repr(Settings(api_keys="hunter2"))


@pytest.mark.parametrize(
    "values",
    [
        {"preset": "huge"},
        {"port": 0},
        {"modalities": "text,video"},
        {"modalities": ""},
        {"modalities": "text,text"},
        {"max_batch_size": 0},
        {"max_upload_bytes": 10**9, "max_request_bytes": 10**6},
        {"dtype": "int8"},
    ],
)
def test_invalid_values_are_refused(values):
    with pytest.raises(ValidationError):
        Settings(**values)


def test_xdg_data_home_is_respected(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == Path(tmp_path) / "mmembed"


def test_each_app_serves_with_its_own_settings(make_client):
    """Routes read the settings given to create_app, so two apps in one process keep
    their own limits (tests and embedders rely on this)."""
    lenient, strict = make_client(), make_client(max_text_chars=5)
    assert lenient.post("/embed", json={"text": "twelve chars"}).status_code == 200
    response = strict.post("/embed", json={"text": "twelve chars"})
    assert response.status_code == 400 and "the limit is 5" in response.json()["error"]["message"]
    assert lenient.post("/embed", json={"text": "twelve chars"}).status_code == 200


def test_no_dependency_runs_on_a_worker_thread_or_through_an_override(client):
    """FastAPI runs a plain `def` dependency on a worker thread and re-inspects an
    override's signature per request; the service's dependencies avoid both."""
    import inspect

    from fastapi.routing import APIRoute

    from service.app import ROUTERS

    assert not client.app.dependency_overrides
    seen = 0
    for router in ROUTERS:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            stack = list(route.dependant.dependencies)
            while stack:
                dependant = stack.pop()
                stack.extend(dependant.dependencies)
                call = dependant.call
                target = call if inspect.isfunction(call) else type(call).__call__
                assert inspect.iscoroutinefunction(target), f"{route.path}: {call} is not async"
                seen += 1
    assert seen > 10


def test_torch_threads_applied_when_the_service_builds_its_model(tmp_path):
    import torch
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    before = torch.get_num_threads()
    settings = Settings(preset="tiny", modalities="text", torch_threads=1, data_dir=tmp_path)
    try:
        with TestClient(
            create_app(settings), base_url="http://127.0.0.1"
        ) as client:  # lifespan loads the model
            assert client.get("/readyz").status_code == 200
            # The model runs on the batchers' worker threads: ask one of them.
            state = client.app.state.service
            threads = client.portal.call(
                state.engine.batchers["text"].run_on_worker, torch.get_num_threads
            )
            assert threads == 1
    finally:
        torch.set_num_threads(before)


def test_a_server_shares_the_cores_among_its_batch_workers(monkeypatch, tmp_path):
    import torch
    from fastapi.testclient import TestClient

    import service.settings
    from service.app import create_app

    monkeypatch.setattr(service.settings, "usable_cores", lambda: 4)
    assert Settings(batch_workers=2).for_serving().torch_threads == 2
    assert Settings(batch_workers=1).for_serving().torch_threads == 4
    assert Settings(batch_workers=8).for_serving().torch_threads == 1  # never 0
    assert Settings(batch_workers=2, torch_threads=3).for_serving().torch_threads == 3
    assert Settings().torch_threads is None  # only a server splits the cores

    before = torch.get_num_threads()
    settings = Settings(preset="tiny", modalities="text", batch_workers=4, data_dir=tmp_path)
    try:
        with TestClient(
            create_app(settings), base_url="http://127.0.0.1"
        ) as client:  # lifespan loads the model
            state = client.app.state.service
            threads = client.portal.call(
                state.engine.batchers["text"].run_on_worker, torch.get_num_threads
            )
            assert threads == 1  # 4 cores among 4 workers
    finally:
        torch.set_num_threads(before)
