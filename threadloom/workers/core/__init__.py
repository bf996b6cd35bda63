"""The machinery every worker backend shares, written once.

- `CompletionBuilder` turns a stream of text deltas into the final `Completion` (text, first-token
  time, usage, logprobs, finish and stop reason); `aborted_completion` is the one way to answer
  "aborted" for a request that produced nothing (or only what a caller already holds).
- `ThreadBridge` hands items from a backend's own thread (llama.cpp's engine thread, vLLM's
  engine loop) to the caller's event loop, and aborts the request when the consumer goes away.
- `BaseWorker` gives a backend `generate()` from its `stream()`, the closed guard (`WorkerDead`
  after `close()`), and `async with` support.

A new backend subclasses `BaseWorker`, writes `stream()` with a `CompletionBuilder`, and passes
`tests/workers/test_conformance.py`. A pool adopts the core the same way, for example::

    class MyPool(BaseWorker):
        async def stream(self, request):
            self.check_open()
            if request.request_id in self._aborted_while_queued:
                yield StreamDelta(text="", completion=aborted_completion(request, self.worker_id))
                return
            async for delta in member.stream(request):
                yield delta
"""

from threadloom.workers.core.bridge import ThreadBridge
from threadloom.workers.core.completion import CompletionBuilder, aborted_completion
from threadloom.workers.core.worker import BaseWorker

__all__ = ["BaseWorker", "CompletionBuilder", "ThreadBridge", "aborted_completion"]
