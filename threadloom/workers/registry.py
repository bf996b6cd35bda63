"""Worker kinds by name, resolved lazily: 'llamacpp[:PATH]', 'vllm:MODEL', 'openai:URL', 'fake'."""

from __future__ import annotations

from typing import Any

from threadloom.errors import ConfigError
from threadloom.workers.base import Worker

WORKER_KINDS = ("llamacpp", "vllm", "openai", "fake", "ray")


def make_worker(spec: str | Worker | None = None, **options: Any) -> Worker:
    """Build a worker from a spec; None or 'llamacpp' is the embedded default model."""
    if spec is not None and not isinstance(spec, str):
        return spec
    kind, _, argument = (spec or "llamacpp").partition(":")
    kind = kind.strip().lower().replace("_", "").replace("-", "")
    if kind in ("llamacpp", "default", "local"):
        from threadloom.workers.llamacpp import LlamaCppWorker

        return LlamaCppWorker(argument or options.pop("model", None), **options)
    if kind == "fake":
        from threadloom.workers.fake import FakeWorker

        script = tuple(argument.split("|")) if argument else ("42",)
        return FakeWorker(script, **options)
    if kind == "vllm":
        from threadloom.workers.vllm import VLLMWorker

        return VLLMWorker(argument or options.pop("model", None), **options)
    if kind == "openai":
        from threadloom.workers.openai import OpenAIWorker

        if argument:
            options["base_url"] = argument
        return OpenAIWorker(**options)
    if kind == "ray":
        from threadloom.workers.ray_cluster import open_ray_worker

        return open_ray_worker(argument, **options)
    if kind.endswith(".gguf") or (spec or "").endswith(".gguf"):
        from threadloom.workers.llamacpp import LlamaCppWorker

        return LlamaCppWorker(spec, **options)
    raise ConfigError(
        f"unknown worker {spec!r}; valid workers: {', '.join(WORKER_KINDS)} "
        "(e.g. 'llamacpp', 'llamacpp:/path/model.gguf', 'vllm:Qwen/Qwen2.5-0.5B-Instruct', "
        "'openai:http://127.0.0.1:8000/v1', "
        "'fake:reply one|reply two', 'ray:cluster.yaml')"
    )
