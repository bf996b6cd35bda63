"""`--config FILE` of `run` and `bench`: a YAML file whose options become the command's
defaults, so flags given on the command line override it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import typer
import yaml

from threadloom.cli.console import fail

CONFIGURED_COMMANDS = ("run", "bench")
"""Commands that read `--config`; a config file may hold one section per command."""

_NOT_CONFIGURABLE = {"config", "log_level", "help"}


def load_config(ctx: typer.Context, value: Path | None) -> Path | None:
    """Callback of `--config FILE`: the file's options become this command's defaults, so flags
    given on the command line override them. Relative paths in it are read from its folder."""
    if value is None:
        return None
    options = _read_config(value, ctx.info_name or "")
    by_key = _configurable(ctx.command)
    defaults: dict[str, Any] = {}
    for key, raw in options.items():
        param = by_key.get(str(key).replace("-", "_"))
        if param is None:
            raise fail(
                f"--config {value}: {key!r} is not an option of `threadloom {ctx.info_name}`; "
                f"its options: {', '.join(sorted(k for k in by_key if not k.startswith('as_')))}"
            )
        defaults[param.name or str(key)] = _config_value(param, raw, value.parent)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _read_config(path: Path, command: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"--config {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise fail(f"--config {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise fail(f"--config {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise fail(
            f"--config {path} must hold a mapping of options, e.g. 'temperature: 0.2', "
            f"got {type(data).__name__}"
        )
    sections = [key for key in data if key in CONFIGURED_COMMANDS]
    if not sections:
        return data
    others = [str(key) for key in data if key not in CONFIGURED_COMMANDS]
    if others:
        raise fail(
            f"--config {path} mixes command sections ({', '.join(sections)}) with top-level "
            f"options ({', '.join(others)}); put every option under 'run:' or 'bench:'"
        )
    section = data.get(command) or {}
    if not isinstance(section, dict):
        raise fail(f"--config {path}: the '{command}:' section must be a mapping of options")
    return section


def _configurable(command: Any) -> dict[str, Any]:
    """Option name (as in the file) -> option: every long flag and the parameter name."""
    found: dict[str, Any] = {}
    for param in command.params:
        if param.param_type_name != "option" or param.hidden or param.name is None:
            continue
        if param.name in _NOT_CONFIGURABLE:
            continue
        found[param.name] = param
        for flag in param.opts:
            if flag.startswith("--"):
                found[flag[2:].replace("-", "_")] = param
    return found


def _config_value(param: Any, raw: Any, base: Path) -> Any:
    if param.multiple and not isinstance(raw, list):
        raw = [raw]
    if _takes_a_path(param) and raw is not None:
        if isinstance(raw, list):
            return [str(base / str(item)) for item in raw]
        return str(base / str(raw))
    return raw


def _takes_a_path(param: Any) -> bool:
    """Whether an option's value is a file or folder (typer describes it by its annotation;
    older versions through click's Path type)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        annotation = descriptor.annotation
        return annotation is Path or Path in get_args(annotation)
    return getattr(getattr(param, "type", None), "name", "") == "path"


def config_option() -> Any:
    """The `--config FILE` option of a command (typer.Option with the loading callback)."""
    return typer.Option(
        "--config",
        is_eager=True,
        callback=load_config,
        dir_okay=False,
        help="YAML file of this command's options (a 'run:'/'bench:' section or flat); "
        "flags given here override it.",
    )
