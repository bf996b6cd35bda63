"""The vLLM backend: an `AsyncLLM` engine in-process (or inside a Ray actor)."""

from threadloom.workers.vllm.worker import VLLMWorker

__all__ = ["VLLMWorker"]
