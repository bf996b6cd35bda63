"""Resuming: a stream that breaks after some text continues from that text."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from threadloom.errors import ConfigError, WorkerDead, WorkerUnavailable
from threadloom.types import GenerationRequest
from threadloom.workers.base import StreamDelta, Worker
from threadloom.workers.wrappers.base import Wrapper
from threadloom.workers.wrappers.progress import Progress
from threadloom.workers.wrappers.signals import Closing

logger = logging.getLogger(__name__)

__all__ = ["Resuming"]


class Resuming(Wrapper):
    """Continues a broken stream as a new request on the same worker.

    When a stream fails with a resumable error after some text reached the consumer, the
    request is sent again with the text so far appended to its assistant prefix and
    `max_tokens` reduced by the tokens already produced (as the worker counted them). The
    consumer's deltas stay one stream, and the final Completion holds the whole text, the
    tokens of every part once, `attempts` and `failed_workers`. A failure before any text is
    raised as it is: that is a plain retry, which `Retrying` does; `Resuming(Retrying(worker))`
    retries each continuation before its first token, with pauses.

    Args:
        worker: A worker that continues an assistant prefix where it ends.
        max_resumes: Continuations per request at most; the next break is raised.
        resume_on: Errors that break a stream resumably.

    Raises:
        ConfigError: The worker cannot continue a prefix (`capabilities.continues_prefix`
            false, e.g. a chat server without a template): a continuation would start a new
            turn instead of carrying on the text. Use `Retrying`, or give the worker a chat
            template so it continues raw text.
    """

    def __init__(
        self,
        worker: Worker,
        *,
        max_resumes: int = 3,
        resume_on: tuple[type[Exception], ...] = (WorkerUnavailable, WorkerDead),
    ) -> None:
        if max_resumes < 1:
            raise ConfigError(f"Resuming needs max_resumes >= 1, got {max_resumes}")
        if not worker.capabilities.continues_prefix:
            raise ConfigError(
                f"worker {worker.worker_id} cannot continue an assistant prefix, so a broken "
                "stream cannot be resumed on it (the continuation would start a new turn); wrap "
                "it in Retrying instead, or give it a chat template"
            )
        super().__init__(worker)
        self.max_resumes = max_resumes
        self.resume_on = resume_on
        self.resumes = 0
        """Continuations sent, over this wrapper's life."""

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamDelta]:
        self.check_open()
        rid = request.request_id
        progress = Progress(request)
        self._aborts.open(rid)
        try:
            while progress.result is None:
                try:
                    attempt = progress.next_request(resume=True)
                    async with Closing(self._relay(attempt)) as deltas:
                        async for delta in deltas:
                            if not progress.book(delta):
                                break
                            yield delta
                    if progress.result is None:
                        raise progress.broken(self.inner)
                except self.resume_on as exc:
                    if not progress.texts or len(progress.failed) >= self.max_resumes:
                        raise
                    self._broken(progress, exc)
            yield StreamDelta(text="", completion=progress.result)
        finally:
            self._aborts.close(rid)

    def _broken(self, progress: Progress, error: BaseException) -> None:
        """Book a break; end the request when it cannot go on (aborted, or no tokens left)."""
        rid = progress.request.request_id
        progress.failed.append(self.worker_id)
        if self._aborts.asked(rid):
            progress.end_here("abort", self.worker_id)
        elif progress.left <= 0:
            progress.end_here("length", self.worker_id)
        else:
            self.resumes += 1
            logger.warning("request %s broke on %s after %d tokens (%s); continuing it",
                           rid, self.worker_id, progress.spent, error)  # fmt: skip
