"""The Ray transport: pools of worker actors spread over a cluster, described by a cluster file."""

from threadloom.workers.ray.pool import RayPool

__all__ = ["RayPool"]
