"""An example threadloom plugin: the `shortest-of-n` strategy, the `word-limit` verifier and
the `echo` worker, registered through entry points (see this package's pyproject.toml)."""

from threadloom_example_plugin.strategy import ShortestOfN
from threadloom_example_plugin.verifier import WordLimit
from threadloom_example_plugin.worker import EchoWorker

__all__ = ["EchoWorker", "ShortestOfN", "WordLimit"]
