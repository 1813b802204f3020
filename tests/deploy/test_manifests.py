"""Deployment files, checked as far as a machine without Docker or Kubernetes allows: the
compose file and manifests parse and carry the fields that make them work, and the image's
entrypoint roles fail fast on missing settings when run directly."""
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_wires_postgres_ray_and_the_service():
    c = _compose()
    services = c["services"]
    assert set(services) == {"postgres", "ray-head", "ray-worker", "snrlab"}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    head = services["ray-head"]
    assert head["command"] == ["ray-head"] and "ports" not in head  # dashboard on the compose network only
    assert "shm_size" in services["ray-worker"]
    api = services["snrlab"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert api["deploy"]["replicas"] == 2 and api["ports"] == ["127.0.0.1:8000-8001:8000"]  # one host port each
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    env = api["environment"]
    assert env["SNRLAB_RAY_ADDRESS"] == "ray-head:6379"
    assert env["SNRLAB_DATABASE_URL"].startswith("postgresql+psycopg://")
    # required variables fail fast
    assert re.search(r"\$\{POSTGRES_PASSWORD:\?", (ROOT / "docker-compose.yml").read_text())
    # one image for Ray and the service, and one shared volume for checkpoints on every node
    for name in ("ray-head", "ray-worker", "snrlab"):
        assert services[name]["image"] == "snrlab:latest"
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
        assert "runs:/data" in services[name]["volumes"]
    assert {"pgdata", "runs"} <= set(c["volumes"])
    assert "capabilities: [gpu]" in (ROOT / "docker-compose.yml").read_text()  # GPU reservation, commented


def test_kuberay_manifests_have_the_fields_that_matter():
    cluster = yaml.safe_load((ROOT / "deploy/kuberay/raycluster.yaml").read_text())
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    spec = cluster["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"] and spec["enableInTreeAutoscaling"]
    worker = gpu["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "runs", "mountPath": "/data"} in worker["volumeMounts"]

    docs = list(yaml.safe_load_all((ROOT / "deploy/kuberay/snrlab.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"PersistentVolumeClaim", "Secret", "Deployment", "Service"}
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["SNRLAB_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] in kinds["Secret"]["stringData"]
    assert env["SNRLAB_RAY_ADDRESS"]["value"].startswith(cluster["metadata"]["name"] + "-head-svc")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # a standby is ready: it serves
    deployment = kinds["Deployment"]["spec"]
    assert deployment["replicas"] == 2 and deployment["strategy"]["type"] == "RollingUpdate"


def _entrypoint(*args):
    """Run the entrypoint as the image would, with this venv's console scripts on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("SNRLAB_DATABASE_URL", "RAY_HEAD_ADDRESS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", str(ROOT / "deploy/entrypoint.sh"), *args], capture_output=True, text=True, env=env, timeout=60)


def test_entrypoint_roles_fail_fast_without_their_settings():
    res = _entrypoint("serve")
    assert res.returncode != 0 and "SNRLAB_DATABASE_URL must be set" in res.stderr
    res = _entrypoint("ray-worker")
    assert res.returncode != 0 and "RAY_HEAD_ADDRESS must be set" in res.stderr


def test_entrypoint_passes_other_commands_through():
    res = _entrypoint("snrlab", "--help")
    assert res.returncode == 0 and "train" in res.stdout


def test_dockerfile_builds_one_image_from_the_project():
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    assert "pip install ." in text and 'ENTRYPOINT ["snrlab-entrypoint"]' in text


def test_serve_joins_a_cluster_as_a_node_without_cpus(tmp_path):
    """A Ray driver joins by host:port only from a node of the cluster: with SNRLAB_RAY_ADDRESS the
    serve role first starts a 0-CPU node there. `ray` and `snrlab` are stand-ins that record
    their arguments (this checks the script's logic; test_multinode drives real clusters)."""
    log = tmp_path / "calls"
    for name in ("ray", "snrlab"):
        stub = tmp_path / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "SNRLAB_DATABASE_URL": "sqlite:///x.db"}
    for address, joins in (("ray-head:6379", True), ("ray://ray-head:10001", False), (None, False)):
        log.unlink(missing_ok=True)
        run_env = {k: v for k, v in env.items() if k != "SNRLAB_RAY_ADDRESS"} | ({"SNRLAB_RAY_ADDRESS": address} if address else {})
        res = subprocess.run(["bash", str(ROOT / "deploy/entrypoint.sh"), "serve"], capture_output=True, text=True, env=run_env, timeout=60)
        calls = log.read_text().splitlines()
        assert res.returncode == 0 and calls[0] == "snrlab db upgrade" and calls[-1].startswith("snrlab serve --host 0.0.0.0")
        started = [c for c in calls if c.startswith("ray start")]
        assert started == ([f"ray start --address={address} --num-cpus=0 --num-gpus=0 --disable-usage-stats"] if joins else [])
