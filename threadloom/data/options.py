"""Validation of the keyword options a dataset takes, reported as ConfigError."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from threadloom.errors import ConfigError

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(model: type[OptionsT], dataset: str, options: dict[str, Any]) -> OptionsT:
    """Validate `options` against a dataset's options model.

    Raises:
        ConfigError: An option is unknown or out of range; the message lists the valid ones.
    """
    try:
        return model(**options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
            for err in exc.errors()
        )
        valid = ", ".join(
            f"{name} (default {field.default!r})" for name, field in model.model_fields.items()
        )
        raise ConfigError(
            f"bad options for dataset {dataset!r}: {problems}. Valid options: {valid}"
        ) from None
