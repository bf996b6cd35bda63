"""The Ray transport: pools of worker actors spread over a cluster, described by a cluster file.

`RayPool` is imported on first use, so the pure parts (the cluster file in `config`) load
without Ray installed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RayPool"]


def __getattr__(name: str) -> Any:
    if name == "RayPool":
        from threadloom.workers.ray.pool import RayPool

        return RayPool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
