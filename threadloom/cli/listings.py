"""`threadloom workers | strategies | verifiers`: the kinds this installation knows (plugins
included), as tables or `--json`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from threadloom.cli.console import fail_on, table_console, write_json
from threadloom.cli.options import LogLevelOption, OldClusterOption, renamed
from threadloom.errors import ThreadloomError
from threadloom.registry import BUILTIN_ORIGIN, KindInfo

JsonOption = Annotated[bool, typer.Option("--json", help="Print the listing as JSON.")]


def _kind_cell(info: KindInfo) -> Text:
    text = Text(info.kind)
    if info.origin != BUILTIN_ORIGIN:
        text.append(f" ({info.origin})", style="cyan")
    return text


def workers_command(
    model: Annotated[Path | None, typer.Option(help="Describe this GGUF instead.")] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Show this Ray cluster's nodes and threadloom actors ('auto')."),
    ] = None,
    cluster: Annotated[
        Path | None, typer.Option("--cluster", help="Show (and check) a cluster file's pools.")
    ] = None,
    old_cluster: OldClusterOption = None,
    speculation: Annotated[
        bool,
        typer.Option(
            "--speculation",
            help="Measure the llama.cpp worker's adaptive speculation here (seconds) and show it.",
        ),
    ] = False,
    as_json: JsonOption = False,
    log_level: LogLevelOption = None,
) -> None:
    """List the worker kinds, whether each is installed, and the bundled model."""
    cluster = renamed(cluster, old_cluster, new_flag="--cluster", old_flag="--workers")
    if ray_address is not None or cluster is not None:
        from threadloom.cli.cluster import show_cluster

        try:
            show_cluster(ray_address, cluster, as_json=as_json)
        except ThreadloomError as exc:
            raise fail_on(exc) from None
        return
    from threadloom.workers.models import BUNDLED_NAME, bundled_model_path, resolve_model_path
    from threadloom.workers.registry import worker_kinds

    kinds = worker_kinds.describe()
    try:
        path = resolve_model_path(model) if model else bundled_model_path()
    except ThreadloomError as exc:
        raise fail_on(exc) from None
    name = BUNDLED_NAME if model is None else path.name
    state = _measure_speculation(path) if speculation else None
    if as_json:
        payload: dict[str, Any] = {
            "workers": [k.model_dump() for k in kinds],
            "model": {"name": name, "path": str(path), "size_bytes": path.stat().st_size},
        }
        if state is not None:
            payload["speculation"] = state
        write_json(json.dumps(payload, indent=2, default=str))
        return
    table = Table(title="worker backends")
    for column in ("kind", "spec", "available", "notes"):
        table.add_column(column)
    for info in kinds:
        available = "yes" if info.available else "no"
        table.add_row(_kind_cell(info), Text(info.usage), available, Text(info.summary))
    out = table_console()
    out.print(table)
    out.print(
        f"[bold]model:[/] {escape(name)}\n[bold]path:[/] {escape(str(path))}\n"
        f"[bold]size:[/] {path.stat().st_size / 1e6:.1f} MB"
    )
    if state is not None:
        table = Table(title="llama.cpp speculation, measured on this machine")
        table.add_column("field")
        table.add_column("value", justify="right")
        for field, value in state.items():
            table.add_row(field, "-" if value is None else str(value))
        out.print(table)


def _measure_speculation(model: Path) -> dict[str, Any]:
    """Run a few copy-heavy and free-form requests in adaptive mode; what it measured."""
    from threadloom.workers.llamacpp.speculation import SpeculationConfig
    from threadloom.workers.llamacpp.worker import LlamaCppWorker

    fruits = "apple, banana, cherry, date, elderberry, fig, grape, honeydew, kiwi, lemon"
    prompts = (f"Repeat this list exactly, then add one more fruit: {fruits}.", "Tell me a story.")
    config = SpeculationConfig(mode="adaptive", window_steps=8, probe_every=1, max_probe_every=2)

    async def measure() -> dict[str, Any]:
        worker = LlamaCppWorker(model, n_slots=4, speculation=config)
        try:
            for _ in range(3):
                for prompt in prompts:
                    request = worker.chat_request(prompt, temperature=0, max_tokens=64)
                    await worker.generate(request)
            state: dict[str, Any] = dict(worker.stats()["speculation"])
            return state
        finally:
            await worker.close()

    return asyncio.run(measure())


def strategies_command(as_json: JsonOption = False, log_level: LogLevelOption = None) -> None:
    """List the strategies (with their options) and the verifiers this installation knows."""
    from threadloom.strategies.registry import strategy_class, strategy_kinds
    from threadloom.verifiers.registry import verifier_kinds

    rows = []
    for info in strategy_kinds.describe():
        options: list[str] = []
        if info.available:
            try:
                options = [f for f in strategy_class(info.kind).model_fields if f != "kind"]
            except ThreadloomError as exc:  # a broken plugin is listed, not fatal
                info = info.model_copy(update={"available": False, "summary": str(exc)})
        rows.append((info, options))
    if as_json:
        listing = [{**info.model_dump(), "options": options} for info, options in rows]
        write_json(json.dumps({"strategies": listing}, indent=2))
        return
    table = Table(title="strategies")
    for column in ("kind", "options", "what it does"):
        table.add_column(column)
    for info, options in rows:
        table.add_row(_kind_cell(info), ", ".join(options), Text(info.summary))
    out = table_console()
    out.print(table)
    out.print(f"[bold]verifiers:[/] {escape(', '.join(verifier_kinds.kinds()))}")


def verifiers_command(as_json: JsonOption = False, log_level: LogLevelOption = None) -> None:
    """List the verifiers this installation knows."""
    from threadloom.verifiers.registry import verifier_kinds

    kinds = verifier_kinds.describe()
    if as_json:
        write_json(json.dumps({"verifiers": [k.model_dump() for k in kinds]}, indent=2))
        return
    table = Table(title="verifiers")
    for column in ("kind", "available", "what it checks"):
        table.add_column(column)
    for info in kinds:
        table.add_row(_kind_cell(info), "yes" if info.available else "no", Text(info.summary))
    table_console().print(table)
