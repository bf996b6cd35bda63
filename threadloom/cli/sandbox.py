"""`threadloom sandbox check`: the isolation layers that work here, and the attacks against them."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from threadloom.cli.console import console, write_json
from threadloom.cli.options import LogLevelOption
from threadloom.errors import SandboxUnavailable
from threadloom.exit_codes import RUNTIME

sandbox_app = typer.Typer(
    help="Check the sandbox that runs generated code (code verifier).",
    no_args_is_help=True,
)


def _layers() -> list[tuple[str, bool, str]]:
    """(layer, works, detail) for each part of bwrap isolation, and the guards."""
    from threadloom.verifiers.sandbox import bwrap, check_isolation, seccomp

    def probe(name: str, step: Callable[[], object]) -> tuple[str, bool, str]:
        try:
            found = step()
        except SandboxUnavailable as exc:
            return name, False, str(exc)
        return name, True, found if isinstance(found, str) else "ok"

    def tool() -> str:
        found = bwrap.find_bwrap()
        return f"{'.'.join(map(str, found.version))} at {found.path}"

    def libseccomp() -> str:
        seccomp.sandbox_filter()
        seccomp.candidate_filter()
        return "sandbox and candidate filters compiled"

    return [
        probe("bubblewrap", tool),
        probe("interpreter", lambda: bwrap.interpreter().executable),
        probe("seccomp", libseccomp),
        probe("namespaces (bwrap run)", lambda: check_isolation() and "a program ran isolated"),
        ("guards", True, "always available; Python-level only, bypassable"),
    ]


async def _attack_rows(isolations: list[str]) -> list[tuple[str, str, dict[str, tuple[bool, str]]]]:
    from threadloom.verifiers.sandbox.attacks import ATTACKS, run_attack

    rows = []
    for attack in ATTACKS:
        outcomes = {}
        for isolation in isolations:
            outcome = await run_attack(attack, isolation)  # type: ignore[arg-type]
            outcomes[isolation] = (outcome.contained, outcome.evidence)
        rows.append((attack.name, attack.summary, outcomes))
    return rows


@sandbox_app.command("check")
def check_command(
    guards: Annotated[
        bool,
        typer.Option(
            "--guards/--no-guards",
            help="Also run the attacks against the Python guards (isolation='guards').",
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the layers and outcomes as JSON.")
    ] = False,
    log_level: LogLevelOption = None,
) -> None:
    """Show which isolation layers work on this machine and run the attack suite against them.

    Exits with status 3 when bwrap isolation is unavailable or an attack escaped it.
    """
    layers = _layers()
    bwrap_works = layers[3][1]
    isolations = (["bwrap"] if bwrap_works else []) + (["guards"] if guards else [])
    rows: list[tuple[str, str, dict[str, tuple[bool, str]]]] = []
    if isolations:
        # the guards' per-run warning would drown the table
        logging.getLogger("threadloom.verifiers.sandbox.runner").setLevel(logging.ERROR)
        rows = asyncio.run(_attack_rows(isolations))
    escaped = [name for name, _, outcomes in rows if not outcomes.get("bwrap", (True, ""))[0]]
    if as_json:
        _print_json(layers, rows, escaped, bwrap_works)
    else:
        _print_tables(layers, isolations, rows, escaped, bwrap_works)
    if not bwrap_works or escaped:
        raise typer.Exit(RUNTIME)


def _print_json(
    layers: list[tuple[str, bool, str]],
    rows: list[tuple[str, str, dict[str, tuple[bool, str]]]],
    escaped: list[str],
    bwrap_works: bool,
) -> None:
    payload = {
        "layers": [{"layer": n, "works": w, "detail": d} for n, w, d in layers],
        "attacks": [
            {
                "attack": name,
                "tries_to": summary,
                "outcomes": {
                    isolation: {"contained": contained, "evidence": evidence}
                    for isolation, (contained, evidence) in outcomes.items()
                },
            }
            for name, summary, outcomes in rows
        ],
        "contained": bwrap_works and not escaped,
    }
    write_json(json.dumps(payload, indent=2))


def _print_tables(
    layers: list[tuple[str, bool, str]],
    isolations: list[str],
    rows: list[tuple[str, str, dict[str, tuple[bool, str]]]],
    escaped: list[str],
    bwrap_works: bool,
) -> None:
    table = Table(title="isolation layers")
    for column in ("layer", "works", "detail"):
        table.add_column(column)
    for name, works, detail in layers:
        table.add_row(name, Text("yes", "green") if works else Text("no", "red"), Text(detail))
    console.print(table)
    if not isolations:
        console.print(Text("bwrap isolation is unavailable; no attacks were run", "red"))
        return
    attacks = Table(title="attacks (judged by their effect on the host)")
    attacks.add_column("attack")
    attacks.add_column("tries to")
    for isolation in isolations:
        attacks.add_column(isolation)
    for name, summary, outcomes in rows:
        cells = [
            Text("contained", "green") if contained else Text(f"ESCAPED: {evidence}", "red")
            for contained, evidence in outcomes.values()
        ]
        attacks.add_row(name, Text(summary), *cells)
    console.print(attacks)
    if not bwrap_works or escaped:
        what = ", ".join(escaped) if escaped else "bwrap isolation is unavailable"
        console.print(Text(f"not contained: {what}", "red"))
    else:
        console.print(Text(f"bwrap isolation contained all {len(rows)} attacks", "green"))
