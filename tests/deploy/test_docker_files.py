"""What the Dockerfile and docker-compose.yml promise, checked against the code."""

from __future__ import annotations

import re
from pathlib import Path

from service.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env_fields() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {(prefix + name).upper() for name in Settings.model_fields}


def _mount(volume: str) -> tuple[str, str]:
    """'source:target[:mode]' -> (target, source); the source may hold '${VAR:-default}'."""
    if volume.endswith((":ro", ":rw")):
        volume = volume[:-3]
    source, _, target = volume.rpartition(":")
    return target, source


def test_dockerfile_runs_as_non_root(dockerfile):
    users = dockerfile.all("USER")
    assert users, "the image must switch to a non-root USER"
    assert users[-1] not in {"root", "0"}
    assert any("useradd" in run and users[-1] in run for run in dockerfile.all("RUN"))


def test_entrypoint_is_the_cli_serve_command(dockerfile, pyproject):
    command = dockerfile.exec_form("ENTRYPOINT") + dockerfile.exec_form("CMD")
    assert command == ["mmembed", "serve"]
    assert pyproject["project"]["scripts"]["mmembed"] == "service.cli:main"


def test_pins_live_in_constraints_not_in_the_package(dockerfile, pyproject):
    """Users get ranges; CI and the image get the exact versions of constraints.txt."""
    deps = pyproject["project"]["dependencies"]
    assert not [d for d in deps if "==" in d], "package metadata must not pin exact versions"
    pins = dict(
        line.split("==")
        for line in (REPO_ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["torch"].startswith("2."), "constraints.txt pins torch"
    installs = [
        run for run in dockerfile.all("RUN") if "pip install" in run and "--no-deps" not in run
    ]
    assert installs and all("-c constraints.txt" in run for run in installs)
    assert dockerfile.args["TORCH_INDEX_URL"].endswith("/whl/cpu"), "CPU wheels by default"


def test_dependencies_install_before_the_source_is_copied(dockerfile):
    keywords = [(k, v) for k, v in dockerfile.instructions if k in {"RUN", "COPY"}]
    first_source_copy = next(i for i, (k, v) in enumerate(keywords) if k == "COPY" and "model" in v)
    dep_install = next(
        i
        for i, (k, v) in enumerate(keywords)
        if k == "RUN" and re.search(r"pip install (-c \S+ )?'?\.", v)
    )
    assert dep_install < first_source_copy


def test_env_names_are_real_settings(dockerfile, compose):
    fields = _env_fields()
    names = {n for n in dockerfile.env if n.startswith("MMEMBED_")}
    for service in compose["services"].values():
        names |= {n for n in service.get("environment", {}) if n.startswith("MMEMBED_")}
    unknown = names - fields
    assert not unknown, f"variables that no setting reads: {sorted(unknown)}"


def test_port_volumes_and_healthcheck_agree(dockerfile, compose):
    port = dockerfile.env["MMEMBED_PORT"]
    assert dockerfile.one("EXPOSE") == port
    volumes = set(re.findall(r'"(/[^"]+)"', dockerfile.one("VOLUME")))
    assert volumes == {dockerfile.env["MMEMBED_DATA_DIR"], dockerfile.env["HF_HOME"]}
    health = dockerfile.exec_form("HEALTHCHECK")
    assert "/healthz" in " ".join(health)

    service = compose["services"]["mmembed"]
    assert any(p.endswith(f":{port}") for p in service["ports"])
    assert service["ports"][0].startswith("${MMEMBED_PUBLISH:-127.0.0.1:"), "loopback by default"
    mounts = dict(_mount(v) for v in service["volumes"])
    assert mounts["/data"] in compose["volumes"], "index data lives in a named volume"
    assert mounts["/models"] in compose["volumes"], "model cache lives in a named volume"
    assert mounts["/checkpoints"] == "${MMEMBED_CHECKPOINTS_DIR:-./checkpoints}"
    assert service["healthcheck"]["test"] == ["CMD", *health]
    assert service["restart"] == "unless-stopped"
    assert service["build"]["context"] == "."


def test_gpu_profile_reserves_a_gpu(compose):
    gpu = compose["services"]["mmembed-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["MMEMBED_DEVICE"] == "cuda"
    assert "cu1" in gpu["build"]["args"]["TORCH_INDEX_URL"]
    cpu = compose["services"]["mmembed"]
    assert gpu["volumes"] == cpu["volumes"] and gpu["healthcheck"] == cpu["healthcheck"]


def test_compose_leaves_the_preset_unset_so_the_shipped_release_is_served(compose, monkeypatch):
    """`docker compose up` must serve the release: compose passes MMEMBED_PRESET through
    empty unless the user sets it, and an empty variable counts as unset."""
    from service.settings import Settings

    for name, service in compose["services"].items():
        env = service.get("environment", {})
        if "MMEMBED_PRESET" in env:
            assert env["MMEMBED_PRESET"] == "${MMEMBED_PRESET:-}", name
    monkeypatch.setenv("MMEMBED_PRESET", "")
    assert "preset" not in Settings().model_fields_set
    monkeypatch.setenv("MMEMBED_PRESET", "tiny")
    assert "preset" in Settings().model_fields_set


def test_the_package_carries_shipped_releases(pyproject):
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert "weights/*/*" in package_data["model"]


def test_postgres_profile_is_two_replicas_on_pgvector_behind_one_port(dockerfile, compose):
    services = compose["services"]
    profile = {name for name, s in services.items() if s.get("profiles") == ["postgres"]}
    assert profile == {"postgres", "mmembed-pg-a", "mmembed-pg-b", "lb"}
    db = services["postgres"]
    assert db["image"].startswith("pgvector/pgvector:")
    assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    (mount,) = db["volumes"]
    source, target = mount.split(":")
    assert source in compose["volumes"] and target == "/var/lib/postgresql/data"
    assert "ports" not in db, "the database is reachable on the compose network only"
    port = dockerfile.env["MMEMBED_PORT"]
    conf = (REPO_ROOT / "deploy" / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server ([\w-]+):(\d+)", conf, re.M)
    assert upstreams == [("mmembed-pg-a", port), ("mmembed-pg-b", port)]
    for name in ("mmembed-pg-a", "mmembed-pg-b"):
        replica = services[name]
        assert replica["ports"] == [], "only the load balancer publishes a port"
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        url = replica["environment"]["MMEMBED_INDEX_URL"].replace("${MMEMBED_DB_PASSWORD:-", "")
        url = url.replace("}", "")
        assert url == "postgresql://mmembed:mmembed@postgres:5432/mmembed"
        assert Settings(index_url=url).index_url is not None
        assert replica["healthcheck"] == services["mmembed"]["healthcheck"]
    lb = services["lb"]
    assert lb["image"].startswith("nginx:")
    (published,) = lb["ports"]
    listen = re.search(r"listen (\d+);", conf).group(1)
    assert published == "${MMEMBED_PUBLISH:-127.0.0.1:8000}:" + listen, "loopback by default"
    assert lb["volumes"] == ["./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro"]
    assert set(lb["depends_on"]) == {"mmembed-pg-a", "mmembed-pg-b"}
