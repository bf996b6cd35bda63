"""Checks on what a caller passes to `arun`, so that bad input is a ConfigError up front."""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping
from typing import Any, TypeVar, cast, get_args

from pydantic import BaseModel, ValidationError

from threadloom.errors import ConfigError
from threadloom.types import AnswerFormat, Budget, Problem, SamplingParams
from threadloom.unicode_text import first_lone_surrogate

M = TypeVar("M", bound=BaseModel)
_WORKER_MEMBERS = ("generate", "stream", "abort", "close", "worker_id", "capabilities")
_ANSWER_FORMATS: tuple[str, ...] = get_args(AnswerFormat)


def check_run_arguments(
    problem: object,
    *,
    worker: object,
    reference: object,
    system: object,
    answer_format: object,
    params: object,
    budget: object,
) -> tuple[SamplingParams | None, Budget | None]:
    """Check `arun`'s arguments before anything is built or loaded.

    Returns:
        The sampling parameters and budget as models (a dict of fields is accepted for each).

    Raises:
        ConfigError: The first argument that is wrong, with what to pass instead.
    """
    check_problem(problem)
    check_worker(worker)
    check_text_option("reference", reference)
    check_text_option("system", system)
    check_answer_format(answer_format)
    return as_params(params), as_budget(budget)


def check_problem(problem: object) -> None:
    """A prompt string or a Problem, with text that can be encoded.

    Raises:
        ConfigError: Not a string or Problem, an empty prompt, or a lone surrogate in it.
    """
    if isinstance(problem, str):
        if not problem.strip():
            raise ConfigError("the prompt is empty: pass the question, e.g. run('What is 2+2?')")
        check_encodable("the prompt", problem)
        return
    if not isinstance(problem, Problem):
        raise ConfigError(
            f"problem must be a prompt string or a threadloom Problem, got {type(problem).__name__}"
        )
    for index, message in enumerate(problem.chat()):
        check_encodable(f"message {index} ({message.role})", message.content)


def check_encodable(what: str, text: str) -> None:
    """Refuse text that UTF-8 cannot encode (it would fail later, inside a worker).

    Raises:
        ConfigError: `text` holds a lone surrogate; the message says where.
    """
    position = first_lone_surrogate(text)
    if position is not None:
        raise ConfigError(
            f"{what} is not valid Unicode: a lone surrogate {text[position]!r} at character "
            f"{position} (undecodable bytes?); decode the input with errors='replace' first"
        )


def check_worker(worker: object) -> None:
    """None, a worker spec string, or an object with the Worker methods.

    Raises:
        ConfigError: Anything else, naming the methods a worker needs.
    """
    if worker is None or isinstance(worker, str):
        return
    if _class_declares_all(cast(Hashable, type(worker))):
        return
    # not isinstance(Worker) nor hasattr: those would evaluate its properties
    missing = [name for name in _WORKER_MEMBERS if not _declares(worker, name)]
    if missing:  # dir() is slow, but also sees members a class lists through __dir__
        members = set(dir(worker))
        missing = [name for name in missing if name not in members]
    if missing:
        raise ConfigError(
            f"worker must be a spec such as 'fake:42' or 'llamacpp:model.gguf', or a Worker; "
            f"got {type(worker).__name__}, which has no {', '.join(missing)}"
        )


@functools.lru_cache(maxsize=64)
def _class_declares_all(cls: Hashable) -> bool:
    """Whether the class itself has every Worker member (asked once per class: every run
    checks its worker, and most pass one of a few classes)."""
    return all(hasattr(cls, name) for name in _WORKER_MEMBERS)


def _declares(obj: object, name: str) -> bool:
    """Whether `obj` has the attribute `name`, found without evaluating it."""
    return hasattr(type(obj), name) or name in getattr(obj, "__dict__", ())


def check_answer_format(answer_format: object) -> None:
    """None or one of the answer formats.

    Raises:
        ConfigError: Any other value, listing the valid ones.
    """
    if answer_format is not None and answer_format not in _ANSWER_FORMATS:
        raise ConfigError(
            f"answer_format must be one of {', '.join(_ANSWER_FORMATS)}; got {answer_format!r}"
        )


def as_params(params: object) -> SamplingParams | None:
    """SamplingParams from an instance, a dict of its fields, or None.

    Raises:
        ConfigError: A field is unknown or out of range (the message names it).
    """
    return _as_model("params", SamplingParams, params)


def as_budget(budget: object) -> Budget | None:
    """A Budget from an instance, a dict of its fields, or None.

    Raises:
        ConfigError: A field is unknown or out of range (the message names it).
    """
    return _as_model("budget", Budget, budget)


def _as_model(what: str, model: type[M], value: object) -> M | None:
    if value is None or isinstance(value, model):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{what} must be a {model.__name__} or a dict of its fields, "
            f"got {type(value).__name__}"
        )
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or what}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid {what}: {problems}") from None


def check_text_option(what: str, value: Any) -> None:
    """None or a string that can be encoded (the reference answer, the system prompt).

    Raises:
        ConfigError: Another type, or a lone surrogate in the text.
    """
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    check_encodable(what, value)
