"""Background work of the studio: one worker thread and a bounded queue, never the request.

Image generation and persona verbalization can take seconds to minutes (a diffusion model, an LLM
server), so a request only queues a job and answers at once; a status page follows it. One worker
runs jobs in order: a GPU-bound model serves one batch at a time anyway, and order keeps a study
session's persona ahead of its comparisons. Job state is kept in memory (a restart forgets the list;
what a job produced is on disk or in the study store).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from zipp_assets.llm.base import describe_error

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
KEPT_JOBS = 500  # finished jobs remembered for their status pages


class QueueFull(RuntimeError):
    pass


@dataclass
class Job:
    id: str
    kind: str
    title: str  # what the status page says the job is (never a participant's session)
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    result: dict = field(default_factory=dict)
    owner: str = ""  # "editor" jobs show on the jobs page; "study" jobs do not
    progress: str = ""

    @property
    def seconds(self) -> float | None:
        if self.started is None:
            return None
        return round((self.finished or time.time()) - self.started, 2)


class JobQueue:
    def __init__(self, max_queued: int = 1000):
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> JobQueue:
        self._thread = threading.Thread(target=self._run, name="studio-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def submit(self, kind: str, title: str, work: Callable[[Job], dict | None], owner: str = "editor") -> Job:
        """Queue `work(job)`; its returned dict becomes the job's result. QueueFull when the queue is full."""
        job = Job(id=secrets.token_hex(8), kind=kind, title=title, owner=owner)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > KEPT_JOBS:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in (QUEUED, RUNNING):
                    break
                del self._jobs[oldest]
        try:
            self._queue.put_nowait((job, work))
        except queue.Full:
            with self._lock:
                self._jobs.pop(job.id, None)
            raise QueueFull("the studio's work queue is full; try again in a minute") from None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def listed(self, owner: str = "editor") -> list[Job]:
        with self._lock:
            return [j for j in reversed(self._jobs.values()) if j.owner == owner]

    def queued(self) -> int:
        return self._queue.qsize()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """For tests and shutdown: True once nothing is queued or running."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                busy = any(j.status in (QUEUED, RUNNING) for j in self._jobs.values())
            if not busy:
                return True
            time.sleep(0.05)
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            if item is None:
                break
            job, work = item
            job.status, job.started = RUNNING, time.time()
            try:
                job.result = work(job) or {}
                job.status = DONE
            except Exception as error:  # one failed job never stops the worker
                log.exception("studio job %s (%s) failed", job.id, job.kind)
                job.status, job.error = FAILED, describe_error(error)
            finally:
                job.finished = time.time()
