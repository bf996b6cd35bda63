"""The embedded backend: llama.cpp in-process, continuous batching over shared slots."""

from threadloom.workers.llamacpp.worker import LlamaCppWorker

__all__ = ["LlamaCppWorker"]
