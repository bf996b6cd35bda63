"""What produced a bench record: model, worker, sampling, verifier, dataset options, version.

Records carry their run's fingerprint so that results of two configurations never mix: a bench
resuming a results file written by another configuration refuses, and says what differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, field_validator

from threadloom.errors import ConfigError
from threadloom.types import SamplingParams
from threadloom.workers.base import HasModelFile, Worker

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class RunFingerprint(BaseModel):
    """The configuration a bench record was produced with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    """'sha256:<hex>' of a model file, or the id an engine or server loads."""
    worker: str
    """Worker kind: llamacpp, vllm, openai, fake, ray, or a custom worker's class."""
    sampling: dict[str, Any]
    """The sampling parameters every generation started from (less the seed: each problem's
    seed derives from the bench seed, kept under `dataset`)."""
    verifier: str
    """Selection verifier the strategies could use: 'auto', 'none' or a verifier spec."""
    dataset: dict[str, Any]
    """Options that decide the problems: seed, difficulty, a custom file's hash and fields."""
    version: str
    """The threadloom version."""

    @field_validator("sampling")
    @classmethod
    def _with_defaults(cls, sampling: dict[str, Any]) -> dict[str, Any]:
        # a record written before a sampling field existed ran with that field's default
        defaults = SamplingParams().model_dump(mode="json", exclude={"seed"})
        return {**defaults, **sampling}

    def digest(self) -> str:
        """A short stable hash of the whole fingerprint (16 hex digits)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:16]

    def differences(self, other: RunFingerprint) -> list[str]:
        """Each field that differs, as 'field: this → other' (nested fields dotted)."""
        mine = _flatten(self.model_dump(mode="json"))
        theirs = _flatten(other.model_dump(mode="json"))
        return [
            f"{key}: {_show(mine.get(key))} → {_show(theirs.get(key))}"
            for key in sorted(mine.keys() | theirs.keys())
            if mine.get(key) != theirs.get(key)
        ]


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _show(value: Any) -> str:
    text = "(unset)" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 90 else text[:87] + "..."


def threadloom_version() -> str:
    try:
        return version("threadloom")
    except PackageNotFoundError:
        return "unknown"


def file_sha256(path: Path) -> str:
    """'sha256:<hex>' of a file's bytes, read in 1 MiB chunks (the bundled GGUF: 98 MB)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {path} to fingerprint it: {exc}") from None
    return f"sha256:{digest.hexdigest()}"


def _text_sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def redact_url(url: str) -> str:
    """The URL without user name or password, so credentials never reach a results file."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def describe_worker_spec(
    spec: str | None, *, workers_file: Path | None = None, ray_address: str | None = None
) -> tuple[str, str]:
    """(worker kind, model identity) of a worker spec as `threadloom bench` takes it.

    A GGUF model is identified by the SHA-256 of its bytes, hashed once per call (0.06 s for
    the bundled 98 MB file once it is in the page cache), so a renamed file still matches and a
    replaced one does not. Engines and servers are identified by the model id or URL they are
    given, a fake worker by its script, and a Ray cluster file by the hash of the file.
    """
    if workers_file is not None:
        if not workers_file.is_file():
            raise ConfigError(f"cluster file not found: {workers_file} (pass --cluster FILE.yaml)")
        return "ray", f"cluster:{file_sha256(workers_file)}"
    kind, model = _describe_spec(spec)
    return ("ray", model) if ray_address is not None else (kind, model)


def _describe_spec(spec: str | None) -> tuple[str, str]:
    from threadloom.workers.models import resolve_model_path
    from threadloom.workers.registry import worker_kinds

    text = spec or "llamacpp"
    kind, _, argument = text.partition(":")
    kind = worker_kinds.canonical(kind)
    if kind == "llamacpp":
        return "llamacpp", file_sha256(resolve_model_path(argument or None))
    if text.lower().endswith(".gguf"):
        return "llamacpp", file_sha256(resolve_model_path(text))
    if kind == "fake":
        return "fake", f"script:{_text_sha256(argument or '42')}"
    if kind == "vllm":
        return "vllm", argument or "(default)"
    if kind == "openai":
        return "openai", redact_url(argument) if argument else "(default URL)"
    if kind == "ray":
        path = Path(argument)
        return "ray", f"cluster:{file_sha256(path)}" if path.is_file() else argument
    return kind, text


def describe_worker(worker: Worker) -> tuple[str, str]:
    """(worker kind, model identity) of a worker object, for callers that pass no fingerprint.

    A worker with a `model_path` (llama.cpp) is identified by its file's hash; any other by the
    model name its capabilities report.
    """
    kind = type(worker).__name__.removesuffix("Worker").lower() or "worker"
    if isinstance(worker, HasModelFile) and worker.model_path.is_file():
        return kind, file_sha256(worker.model_path)
    return kind, worker.capabilities.model or "(unnamed)"


def make_fingerprint(
    *,
    worker: tuple[str, str],
    params: SamplingParams | None,
    verifier: str | None,
    dataset: dict[str, Any],
) -> RunFingerprint:
    """A fingerprint from a (kind, model) pair, sampling, selection verifier and dataset."""
    kind, model = worker
    sampling = (params or SamplingParams()).model_dump(mode="json", exclude={"seed"})
    return RunFingerprint(
        model=model,
        worker=kind,
        sampling=sampling,
        verifier=verifier or "none",
        dataset=dataset,
        version=threadloom_version(),
    )
