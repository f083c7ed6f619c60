"""deploy/kubernetes: rendered by kustomize, valid against the Kubernetes API's schemas, and
wired as the README says (no cluster needed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from service.cli import app
from tests.conftest import require

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KUBERNETES = "1.32"


def rendered(directory: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    require(kubectl is not None, "kubectl is not installed (apt-get install kubernetes-client)")
    assert kubectl is not None
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name
    )
    return found


def pod(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = named(docs, "Deployment", name)["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("directory", ["base", "overlays/gpu"])
def test_the_manifests_are_valid_kubernetes_objects(directory: str) -> None:
    import kubernetes_validate

    docs = rendered(directory)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    assert kinds == [
        ("Deployment", "hpsearch-api"),
        ("Deployment", "hpsearch-worker"),
        ("Job", "hpsearch-migrate"),
        ("PersistentVolumeClaim", "hpsearch-data"),
        ("PodDisruptionBudget", "hpsearch-api"),
        ("PodDisruptionBudget", "hpsearch-worker"),
        ("Secret", "hpsearch"),
        ("Service", "hpsearch-api"),
    ]


def test_a_broken_manifest_would_be_caught() -> None:
    import kubernetes_validate

    api = named(rendered("base"), "Deployment", "hpsearch-api")
    api["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES, strict=True)


def test_the_api_and_workers_wait_for_the_migration_and_share_the_data_volume() -> None:
    docs = rendered("base")
    job = named(docs, "Job", "hpsearch-migrate")["spec"]["template"]["spec"]["containers"][0]
    assert job["command"] == ["hpsearch", "db", "upgrade"]
    for name in ("hpsearch-api", "hpsearch-worker"):
        spec = pod(docs, name)
        [wait] = spec["initContainers"]
        assert wait["command"][:3] == ["hpsearch", "db", "wait"]
        [container] = spec["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["HPS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "hpsearch",
            "key": "database-url",
        }
        assert env["HPS_DATA_DIR"]["value"] == "/data"
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert spec["volumes"] == [
            {"name": "data", "persistentVolumeClaim": {"claimName": "hpsearch-data"}}
        ]
    api = pod(docs, "hpsearch-api")["containers"][0]
    assert api["env"][1]["valueFrom"]["secretKeyRef"]["key"] == "api-token"
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # a worker's SIGTERM grace covers a trial's checkpoint at the end of its epoch
    assert pod(docs, "hpsearch-worker")["terminationGracePeriodSeconds"] >= 120
    pvc = named(docs, "PersistentVolumeClaim", "hpsearch-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every host's workers write to it


def test_the_gpu_overlay_gives_each_worker_a_gpu_and_several_trial_processes() -> None:
    base, gpu = (
        pod(rendered("base"), "hpsearch-worker"),
        pod(rendered("overlays/gpu"), "hpsearch-worker"),
    )
    assert "nvidia.com/gpu" not in base["containers"][0]["resources"]["limits"]
    worker = gpu["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["args"] == ["--device", "cuda", "--trials-per-device", "4"]
    assert worker["image"] == "ghcr.io/example/hpsearch:latest-cuda"
    api = pod(rendered("overlays/gpu"), "hpsearch-api")["containers"][0]
    assert api["image"] == "ghcr.io/example/hpsearch:latest"  # the API stays on the CPU build
    assert gpu["initContainers"] == base["initContainers"]  # the rest of the base is kept


def test_every_command_in_the_manifests_is_one_hpsearch_has() -> None:
    commands = {
        shlex.join(c["command"] + c.get("args", []))
        for directory in ("base", "overlays/gpu")
        for doc in rendered(directory)
        if doc["kind"] in ("Deployment", "Job")
        for c in doc["spec"]["template"]["spec"].get("initContainers", [])
        + doc["spec"]["template"]["spec"]["containers"]
    }
    runner = CliRunner()
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "hpsearch"
        result = runner.invoke(app, [*_subcommand(words[1:]), "--help"])
        assert result.exit_code == 0, (command, result.output)


def _subcommand(words: list[str]) -> list[str]:
    """The command's words before its options (`db wait --timeout 900` → `db wait`)."""
    taken = []
    for word in words:
        if word.startswith("-"):
            break
        taken.append(word)
    return taken


def test_db_wait_returns_once_the_schema_is_current_and_fails_after_its_timeout(
    tmp_path: Path,
) -> None:
    from service.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'hps.db'}"
    runner = CliRunner()
    early = runner.invoke(app, ["db", "wait", "--url", url, "--timeout", "0.3", "--poll", "0.1"])
    assert early.exit_code == 1
    assert "is at base after 0.3 s" in early.output
    upgrade(url)
    ready = runner.invoke(app, ["db", "wait", "--url", url, "--timeout", "5"])
    assert ready.exit_code == 0, ready.output
    assert "(head)" in ready.output
