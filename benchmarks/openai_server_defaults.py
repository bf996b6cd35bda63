"""Self-consistency through llama_cpp.server started with its defaults, per streaming mode.

llama_cpp.server as usually started (`python -m llama_cpp.server --model m.gguf`) cuts a
running stream short whenever another request arrives. This starts it that way on the bundled
model and runs `threadloom bench` (self-consistency n=8 over arithmetic problems) through it with
each `streaming` mode of the OpenAI worker, and prints errors, accuracy and wall time side by
side. Errors should be 0 in every mode: cut streams are recovered.

    python benchmarks/openai_server_defaults.py --limit 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from openai_server import llama_server


def bench(base_url: str, streaming: str, limit: int, concurrency: int, out: Path) -> dict:
    command = [
        str(Path(sys.executable).with_name("threadloom")), "bench",
        "--dataset", "arithmetic", "--limit", str(limit),
        "-s", "self-consistency:n=8",
        "--worker", f"openai:{base_url}#streaming={streaming}",
        "--max-tokens", "64", "--concurrency", str(concurrency), "--seed", "0",
        "--out", str(out), "--json",
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return {"streaming": streaming, "failed": done.returncode, "wall_s": wall}
    summary = json.loads(done.stdout)
    return {"streaming": streaming, "wall_s": wall, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--modes", default="auto,always")
    args = parser.parse_args()
    rows = []
    with (
        llama_server(server_defaults=True, n_ctx=2048) as base_url,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for mode in args.modes.split(","):
            rows.append(
                bench(base_url, mode, args.limit, args.concurrency, Path(tmp) / f"{mode}.jsonl")
            )
    for row in rows:
        print(json.dumps(row, default=str))


if __name__ == "__main__":
    main()
