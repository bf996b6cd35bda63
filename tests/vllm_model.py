"""The bundled SmolLM2-135M GGUF as a Hugging Face safetensors folder that vLLM can load.

vLLM's CPU build has no GGUF loader, so the vLLM tests convert the bundled model once with
transformers' GGUF reader (needs the `gguf` and `accelerate` packages) and cache the folder.
Three things the plain `save_pretrained` route gets wrong, handled here:

- transformers refuses `save_pretrained` on a model loaded from GGUF, so the weights are written
  with safetensors directly;
- the config read from GGUF has no `architectures`, which vLLM needs to pick its model class,
  and carries a GGUF `quantization_config` that no longer applies to the written weights;
- SmolLM2 ties its output projection to the input embedding: the shared tensor is written once,
  as `model.embed_tokens.weight` (written only as `lm_head.weight`, vLLM warns and then emits
  token 0 forever).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

CACHE_ENV = "THREADLOOM_VLLM_TEST_MODEL"
"""Environment variable naming a folder to hold (or that holds) the converted model."""

_MARKER = "threadloom-source.json"


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "threadloom" / "smollm2-135m-instruct-hf"


def converted_model_dir(target: Path | None = None) -> tuple[Path, float]:
    """The converted folder (built now if missing or stale) and the seconds the build took.

    The folder records which GGUF it came from (path, size, mtime); a different bundled file
    triggers a rebuild. The build writes to a sibling temporary folder and renames it, so an
    interrupted build never leaves a half-written model behind.
    """
    from threadloom.workers.models import bundled_model_path

    gguf = bundled_model_path()
    stat = gguf.stat()
    source = {"gguf": str(gguf), "size": stat.st_size, "mtime": int(stat.st_mtime)}
    target = target or Path(os.environ.get(CACHE_ENV) or default_cache_dir())
    marker = target / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == source:
        return target, 0.0
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        _convert(gguf, staging)
        (staging / _MARKER).write_text(json.dumps(source))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target, time.perf_counter() - started


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # tied: vLLM rebuilds it from model.embed_tokens.weight
        tensors[name] = tensor.detach().to(torch.float16).contiguous()
    if "model.embed_tokens.weight" not in tensors:
        raise RuntimeError("the converted model has no model.embed_tokens.weight")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["architectures"] = [type(model).__name__]
    config["torch_dtype"] = "float16"
    for key in ("dtype", "quantization_config", "_name_or_path"):
        config.pop(key, None)  # the weights are plain float16 now, not GGUF-quantized
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    tokenizer.save_pretrained(str(out))
