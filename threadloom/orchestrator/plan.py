"""Former home of the plan builder and YAML/JSON loading, which now live in `threadloom.graph`.

Only re-exports, so that existing imports keep working; new code imports `threadloom.graph`.
"""

from threadloom.graph.builder import GraphBuilder, StrategyGraph, graph_from_dict
from threadloom.graph.files import load_plan

__all__ = ["GraphBuilder", "StrategyGraph", "graph_from_dict", "load_plan"]
