"""A three-node Ray cluster on this machine with the snrlab service joined to it, for
tests/service/test_multinode.py: a head that schedules nothing (num_cpus=0) and two worker nodes
of one CPU each (`ray.cluster_utils.Cluster`: real raylets, real node death), and the service
(`service.main.create_app` under uvicorn) with SNRLAB_RAY_ADDRESS set to the head.

It runs in a process of its own because the test session already holds a Ray session. Protocol
on stdout, one JSON object per line after the marker `MULTINODE `:
    {"event": "ready", "url": ..., "ray_address": ..., "workers": [node id, node id]}
    {"event": "removed", "node_id": ...}          (answer to a remove_node command)
    {"event": "actors", "nodes": {name: node id}}  (answer to an actors command)
Commands on stdin, one JSON object per line:
    {"cmd": "actors"}                              where the live snrlab-run_* actors are
    {"cmd": "remove_node", "node_id": ...}         kill that worker node's processes
    {"cmd": "stop"} or end of input                stop the service and the cluster, exit 0

    python tests/service/multinode_cluster.py --database-url URL --data-dir DIR
    python tests/service/multinode_cluster.py --cluster-only    (the cluster alone: the caller runs
        its own services against ray_address; tests/service/test_replicas.py)

RAY_TMPDIR should point at a directory of its own (the caller sets it): Ray writes the
"current cluster" address file there, and a plain `ray.init()` elsewhere on this machine must not
find this cluster through it."""
from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

MARK = "MULTINODE "

# Fast node-death detection: the GCS declares a node dead after 3 missed 1 s health checks.
SYSTEM_CONFIG = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def say(**event) -> None:
    print(MARK + json.dumps(event), flush=True)


def start_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": SYSTEM_CONFIG})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    return cluster, workers


def run_actor_nodes() -> dict[str, str]:
    """Node of each live run actor (`snrlab-run_...-aN`), from the GCS actor table (no dashboard)."""
    import ray

    return {a["Name"]: a["Address"]["NodeID"] for a in ray._private.state.actors().values()
            if a.get("Name", "").startswith("snrlab-run_") and a.get("State") == "ALIVE"}


class Server:
    """uvicorn in a thread on a free port."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.time() + 300
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        self.sock.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url")
    p.add_argument("--data-dir")
    p.add_argument("--cluster-only", action="store_true")
    a = p.parse_args()

    cluster, workers = start_cluster()
    server = None
    try:
        if a.cluster_only:
            say(event="ready", ray_address=cluster.address, workers=[n.node_id for n in workers])
            for line in sys.stdin:
                if json.loads(line)["cmd"] == "stop":
                    break
            return 0
        from service.app.main import create_app
        from service.core.config import Settings

        settings = Settings(database_url=a.database_url, data_dir=a.data_dir, ray_address=cluster.address,
                            dispatch_interval_s=0.5)
        server = Server(create_app(settings))
        server.start()
        nodes = {n.node_id: n for n in workers}
        say(event="ready", url=server.url, ray_address=cluster.address, workers=list(nodes))
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "stop":
                break
            if cmd["cmd"] == "actors":
                say(event="actors", nodes=run_actor_nodes())
            if cmd["cmd"] == "remove_node":
                cluster.remove_node(nodes.pop(cmd["node_id"]), allow_graceful=False)
                say(event="removed", node_id=cmd["node_id"])
    finally:
        if server is not None:
            server.stop()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
