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
        from threadloom.workers.llamacpp.worker import LlamaCppWorker

        return LlamaCppWorker(argument or options.pop("model", None), **options)
    if kind == "fake":
        from threadloom.workers.fake import FakeWorker

        script = tuple(argument.split("|")) if argument else ("42",)
        return FakeWorker(script, **options)
    if kind == "vllm":
        from threadloom.workers.vllm.worker import VLLMWorker

        return VLLMWorker(argument or options.pop("model", None), **options)
    if kind == "openai":
        from threadloom.workers.openai.worker import OpenAIWorker

        if argument:
            base_url, _, settings = argument.partition("#")
            options["base_url"] = base_url
            options.update(_fragment_options(settings, spec or ""))
        return OpenAIWorker(**options)
    if kind == "ray":
        from threadloom.workers.ray.cluster import open_ray_worker

        return open_ray_worker(argument, **options)
    if kind.endswith(".gguf") or (spec or "").endswith(".gguf"):
        from threadloom.workers.llamacpp.worker import LlamaCppWorker

        return LlamaCppWorker(spec, **options)
    raise ConfigError(
        f"unknown worker {spec!r}; valid workers: {', '.join(WORKER_KINDS)} "
        "(e.g. 'llamacpp', 'llamacpp:/path/model.gguf', 'vllm:Qwen/Qwen2.5-0.5B-Instruct', "
        "'openai:http://127.0.0.1:8000/v1#model=NAME', "
        "'fake:reply one|reply two', 'ray:cluster.yaml')"
    )


_OPENAI_FRAGMENT_KEYS = ("model", "dialect", "streaming")


def _fragment_options(settings: str, spec: str) -> dict[str, str]:
    """Options after '#' in 'openai:URL#model=NAME&dialect=vllm' (a URL fragment is never sent)."""
    options: dict[str, str] = {}
    for pair in filter(None, settings.split("&")):
        key, sep, value = pair.partition("=")
        if not sep or key not in _OPENAI_FRAGMENT_KEYS or not value:
            raise ConfigError(
                f"cannot read {pair!r} in worker {spec!r}; after '#' write "
                f"{'=VALUE&'.join(_OPENAI_FRAGMENT_KEYS)}=VALUE pairs, e.g. "
                "'openai:http://127.0.0.1:8000/v1#model=Qwen/Qwen2.5-7B-Instruct'"
            )
        options[key] = value
    return options
