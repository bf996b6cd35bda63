"""`threadloom serve`: an OpenAI-compatible HTTP server whose models are strategies.

Needs the `serve` extra (`pip install 'threadloom[serve]'`). `create_app` builds the ASGI app
around one worker shared by every request; `threadloom.cli.serve` is the CLI command.
"""

from __future__ import annotations

from threadloom.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from threadloom.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'threadloom.serve' has no attribute {name!r}")
