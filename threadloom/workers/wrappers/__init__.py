"""Workers that wrap a worker and are Workers themselves: policies composed, not flags.

- `Retrying(worker, attempts=3, backoff=0.05)`: a request that fails before its first token
  is sent again after a pause.
- `ConcurrencyLimited(worker, limit)`: at most `limit` requests in flight; the rest queue,
  and a queued request honours abort and cancellation.
- `Resuming(worker)`: a stream that breaks after some text continues from it, within the
  request's `max_tokens`.

They compose: `Resuming(Retrying(ConcurrencyLimited(worker, 8)))`. A `Pool` spreads requests
over several workers and fails over between them with the same bookkeeping as `Resuming`.
"""

from threadloom.workers.wrappers.base import Wrapper
from threadloom.workers.wrappers.limited import ConcurrencyLimited
from threadloom.workers.wrappers.progress import Progress, can_continue
from threadloom.workers.wrappers.resuming import Resuming
from threadloom.workers.wrappers.retrying import Retrying

__all__ = ["ConcurrencyLimited", "Progress", "Resuming", "Retrying", "Wrapper", "can_continue"]
