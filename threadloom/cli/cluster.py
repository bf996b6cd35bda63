"""Ray cluster options of the command line: `--cluster FILE`, `--ray-address ADDR`, and the
cluster view of `threadloom workers`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from threadloom.cli.console import table_console, write_json
from threadloom.workers.base import Worker


def cluster_worker(
    cluster_file: Path | None, ray_address: str | None, worker_spec: str | None
) -> Worker:
    """The Worker for `--cluster` / `--ray-address`: every pool of the file, or one actor of
    the `--worker`/`--model` spec on the cluster. The caller closes it."""
    from threadloom.workers.ray.cluster import open_ray_worker

    target = str(cluster_file) if cluster_file is not None else (worker_spec or "llamacpp")
    return open_ray_worker(target, address=ray_address)  # type: ignore[no-any-return]


def show_pools(cluster_file: Path, config: Any) -> None:
    """Print the pools a cluster file declares."""
    table = Table()
    for column in ("pool", "role", "worker", "replicas", "per actor", "tp", "slots", "spec."):
        table.add_column(column, justify="right" if column in ("replicas", "tp") else "left")
    for name, spec in config.pools.items():
        table.add_row(
            Text(name),
            spec.role,
            Text(spec.worker_spec),
            str(spec.replicas),
            _resources(spec.demand()),
            str(spec.tensor_parallel_size),
            str(spec.max_concurrency or "worker batch"),
            "on" if spec.speculation else "off",
        )
    out = table_console()
    out.print(Text(f"pools in {cluster_file}", style="italic"))  # a path never wraps in a title
    out.print(table)


def show_cluster(
    ray_address: str | None, cluster_file: Path | None = None, *, as_json: bool = False
) -> None:
    """`threadloom workers --ray-address ...`: nodes, then every threadloom actor.

    With a cluster file too, also checks that its pools fit the cluster's nodes. With
    `as_json`, prints one JSON object (pools, nodes, actors) instead of tables.
    """
    from threadloom.workers.ray import cluster as ray_cluster
    from threadloom.workers.ray.config import load_cluster_config

    shown: dict[str, Any] = {}
    config = load_cluster_config(cluster_file) if cluster_file is not None else None
    if config is not None and cluster_file is not None:
        shown["pools"] = {name: spec.model_dump(mode="json") for name, spec in config.pools.items()}
        if not as_json:
            show_pools(cluster_file, config)
    namespace = config.ray.namespace if config is not None else "threadloom"
    address = ray_address or (config.ray.address if config is not None else None)
    if address is None:
        if as_json:
            write_json(json.dumps({**shown, "checked_against": None}, indent=2, default=str))
        elif config is not None:
            table_console().print("[dim]no --ray-address: pools not checked against a cluster[/]")
        return
    owned = ray_cluster.connect(address, namespace=namespace)
    try:
        nodes = _live_nodes()
        if not as_json:
            _nodes_table(nodes)
        if config is not None:
            ray_cluster.check_placement(config.pools)
            shown["placement"] = "every pool fits this cluster's nodes"
            if not as_json:
                table_console().print("[green]ok[/]: every pool fits this cluster's nodes")
        actors = asyncio.run(ray_cluster.list_actors(namespace))
    finally:
        if owned:
            ray_cluster.shutdown()
    if as_json:
        shown.update(checked_against=address, namespace=namespace, actors=actors, **nodes)
        write_json(json.dumps(shown, indent=2, default=str))
    else:
        _actors_table(actors, namespace)


def _live_nodes() -> dict[str, Any]:
    """The live nodes with their resources, and what the cluster has free now."""
    import ray

    free = ray.available_resources()
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node["Resources"]
        nodes.append(
            {
                "node_id": node["NodeID"],
                "address": node.get("NodeManagerAddress", ""),
                "resources": res,
            }
        )
    return {"nodes": nodes, "free": {"CPU": free.get("CPU", 0), "GPU": free.get("GPU", 0)}}


def _nodes_table(cluster: dict[str, Any]) -> None:
    table = Table(title="nodes")
    for column in ("node", "address", "CPU", "GPU", "memory GiB", "custom resources"):
        table.add_column(column)
    for node in cluster["nodes"]:
        res = node["resources"]
        custom = {
            k: v
            for k, v in res.items()
            if k not in ("CPU", "GPU", "memory", "object_store_memory")
            and not k.startswith("node:")
            and not k.startswith("accelerator_type:")
        }
        table.add_row(
            node["node_id"][:12],
            node["address"],
            f"{res.get('CPU', 0):g}",
            f"{res.get('GPU', 0):g}",
            f"{res.get('memory', 0) / 2**30:.1f}",
            _resources(custom),
        )
    table_console().print(table)
    free = cluster["free"]
    table_console().print(f"[dim]free now: CPU {free['CPU']:g} · GPU {free['GPU']:g}[/]")


def _actors_table(actors: list[dict[str, Any]], namespace: str) -> None:
    if not actors:
        table_console().print(
            f"no threadloom actors in namespace {namespace!r} (they live as long as the job "
            "that created them)"
        )
        return
    table = Table(title=f"threadloom actors ({namespace})")
    columns = ("actor", "pool", "node", "resources", "model", "load", "served", "speculation")
    for column in columns:
        table.add_column(column)
    for actor in actors:
        if "error" in actor:
            error = Text(str(actor["error"]), style="red")  # an exception's text, not markup
            table.add_row(Text(str(actor["worker_id"])), "", "", "", error, "", "", "")
            continue
        spec = actor.get("speculation", {})
        speculation = "off"
        if spec.get("enabled") or spec.get("drafted_tokens"):
            rate = spec.get("acceptance")
            speculation = f"on, {spec['drafted_tokens']} drafted" + (
                f", {100 * rate:.0f}% accepted" if rate is not None else ""
            )
        label = Text(str(actor["worker_id"]))
        if actor.get("restarted"):
            label.append(" (restarted)", style="yellow")
        table.add_row(
            label,
            Text(str(actor.get("pool", ""))),
            f"{actor.get('node_ip', '')} {str(actor.get('node_id', ''))[:8]}",
            _resources(actor.get("resources", {})),
            Text(str(actor.get("capabilities", {}).get("model", ""))),
            f"{actor.get('in_flight', 0)} req · {actor.get('in_flight_tokens', 0)} tok",
            f"{actor.get('served', 0)} · {actor.get('completion_tokens', 0)} tok",
            speculation,
        )
    table_console().print(table)


def _resources(resources: dict[str, float]) -> str:
    parts = []
    for key, amount in sorted(resources.items()):
        if key == "memory":
            parts.append(f"memory {amount / 2**30:.1f}GiB")
        else:
            parts.append(f"{key} {amount:g}")
    return ", ".join(parts) or "-"
