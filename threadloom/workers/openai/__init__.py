"""The OpenAI-compatible HTTP backend: any server that speaks `/v1/completions` or chat."""

from threadloom.workers.openai.worker import OpenAIWorker

__all__ = ["OpenAIWorker"]
