"""Requests to one explainer: a bounded queue, one worker thread, and concurrent requests run together.

    request ──run(work)──► waiting (at most ``max_queue`` images; more: 503) ──► the worker thread
       each time the worker is free it takes the first waiting request and every other waiting one of the
       same kind (scores only or maps; targets given or not; all classes or not), up to ``batch_images``
       images, as one explainer call: no request waits for others to arrive, and a lone one runs at once.

The explainer runs off the event loop, so the server keeps answering health checks and refusing what it
cannot take while it computes. A combined run that fails on a request's input runs each request alone,
so that one bad request fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..engine.base import SaliencyExplainer
from ..errors import RequestError, UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    """What one request asks of the explainer: ``maps`` False computes the scores alone (the model once)."""

    images: np.ndarray
    targets: np.ndarray | None
    maps: bool = True
    all_classes: bool = False

    @property
    def kind(self) -> tuple[bool, bool, bool]:
        """Requests of one kind run as one explainer call."""
        return self.maps, self.targets is not None, self.all_classes


@dataclass(frozen=True)
class Outcome:
    """The explainer's answer to one Work: scores [B, C], targets [B], and maps [B, h, w] (and every class's,
    [B, C, h, w], when asked) unless only scores were."""

    scores: np.ndarray
    targets: np.ndarray
    maps: np.ndarray | None = None
    every: np.ndarray | None = None


@dataclass
class _Job:
    work: Work
    future: asyncio.Future


class Batcher:
    """Runs Work on ``explainer`` in one worker thread; ``start`` inside the event loop, ``close`` to stop."""

    def __init__(self, explainer: SaliencyExplainer, max_queue: int, batch_images: int):
        self.explainer, self.max_queue, self.batch_images = explainer, max_queue, batch_images
        self._waiting: deque[_Job] = deque()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="reciprocam-explain")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._serve())

    @property
    def waiting_images(self) -> int:
        """Images of the requests waiting (not yet taken by the worker, not given up by their clients)."""
        return sum(len(job.work.images) for job in self._waiting if not job.future.done())

    def check_room(self, images: int) -> None:
        """RequestError (503) when ``images`` more would not fit the queue."""
        if self.waiting_images + images > self.max_queue:
            raise RequestError(
                f"the server is busy: {self.waiting_images} images wait to be explained and it queues at most "
                f"{self.max_queue} (--max-queue); retry later",
                503,
            )

    async def run(self, work: Work) -> Outcome:
        """The Outcome of ``work``, once the worker has computed it."""
        assert self._wake is not None, "start() the batcher in the event loop first"
        self.check_room(len(work.images))
        job = _Job(work, asyncio.get_running_loop().create_future())
        self._waiting.append(job)
        self._wake.set()
        return await job.future

    async def close(self) -> None:
        """Stop the worker after the run in progress (requests still waiting are cancelled)."""
        if self._task is not None:
            self._task.cancel()
            for job in self._waiting:
                job.future.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

    async def _serve(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take()
            if not batch:
                continue
            try:
                outcomes = await loop.run_in_executor(self._pool, self._compute, [job.work for job in batch])
            except Exception as exc:  # a bug: answer the batch with it, keep serving
                outcomes = [exc] * len(batch)
            for job, outcome in zip(batch, outcomes):
                if job.future.done():  # its client went away
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    def _take(self) -> list[_Job]:
        """The first waiting job and the waiting ones of its kind, up to batch_images images in all."""
        batch: list[_Job] = []
        kept: deque[_Job] = deque()
        images = 0
        for job in self._waiting:
            count = len(job.work.images)
            if job.future.done():  # cancelled: its client went away
                continue
            if not batch or (job.work.kind == batch[0].work.kind and images + count <= self.batch_images):
                batch.append(job)
                images += count
            else:
                kept.append(job)
        self._waiting = kept
        return batch

    def _compute(self, works: list[Work]) -> list[Outcome | BaseException]:
        """In the worker thread: the works as one call, or one by one where that fails on an input."""
        if len(works) > 1:
            try:
                return _split(self._one(_combined(works)), works)
            except UserError as exc:
                log.info("a combined run of %d requests failed (%s): running them one by one", len(works), exc)
        outcomes: list[Outcome | BaseException] = []
        for work in works:
            try:
                outcomes.append(self._one(work))
            except Exception as exc:  # the request's answer: its status comes from the error
                outcomes.append(exc)
        return outcomes

    def _one(self, work: Work) -> Outcome:
        if not work.maps:
            scores = self.explainer.predict(work.images)
            targets = work.targets if work.targets is not None else scores.argmax(axis=1).astype(np.int64)
            return Outcome(scores, targets)
        result = self.explainer.explain(work.images, work.targets, all_classes=work.all_classes)
        return Outcome(result.scores, result.targets, result.maps, result.every)


def _combined(works: list[Work]) -> Work:
    first = works[0]
    given = [w.targets for w in works if w.targets is not None]  # all or none: works of one kind
    targets = np.concatenate(given) if given else None
    return Work(np.concatenate([w.images for w in works]), targets, first.maps, first.all_classes)


def _split(outcome: Outcome, works: list[Work]) -> list[Outcome | BaseException]:
    parts: list[Outcome | BaseException] = []
    start = 0
    for work in works:
        part = slice(start, start + len(work.images))
        start = part.stop
        parts.append(
            Outcome(
                outcome.scores[part],
                outcome.targets[part],
                None if outcome.maps is None else outcome.maps[part],
                None if outcome.every is None else outcome.every[part],
            )
        )
    return parts
