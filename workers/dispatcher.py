"""The dispatcher: one elected loop per cluster of workers that turns due jobs into tasks.

It is the outbox: a job committed to PostgreSQL is sent to Celery here even when the API's
enqueue failed or Redis lost its queues, and readiness re-checks are scheduled here from
`jobs.next_check_at` instead of countdown tasks that a broker restart would lose.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from celery import Celery
from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from db.engine import get_engine, session_scope
from db.queue import RUN_JOB_TASK
from db.repositories import jobs as jobs_repo
from db.settings import get_settings
from db.states import utcnow
from workers.jobs.batch_check import check_waiting, is_batchable

log = logging.getLogger(__name__)
LEADER_LOCK_KEY = 0x5E57E  # pg advisory lock id of the dispatcher leader


class Dispatcher(threading.Thread):
    """Background thread: dispatch due jobs, and run periodic chores, while leader."""

    def __init__(self, app: Celery, chores: list[tuple[float, Callable[[], object]]]) -> None:
        super().__init__(name="serveplane-dispatcher", daemon=True)
        self.app = app
        self.chores = chores
        self.stop_event = threading.Event()
        self._leader_conn: Connection | None = None
        self._last_run: dict[int, float] = {}

    def stop(self) -> None:
        """Ask the loop to end."""
        self.stop_event.set()

    def run(self) -> None:
        interval = get_settings().dispatcher_interval
        while not self.stop_event.is_set():
            try:
                if self._is_leader():
                    self.dispatch_due_jobs()
                    self._run_chores()
            except Exception:
                log.exception("dispatcher tick failed")
                self._drop_leadership()
            self.stop_event.wait(interval)
        self._drop_leadership()

    def _is_leader(self) -> bool:
        if self._leader_conn is not None:
            return True
        conn = get_engine().connect()
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_KEY}).scalar()
        conn.commit()
        if got:
            self._leader_conn = conn
            log.info("dispatcher: this worker is the leader")
            return True
        conn.close()
        return False

    def _drop_leadership(self) -> None:
        if self._leader_conn is not None:
            # The connection is thrown away (which releases the advisory lock) either way.
            with contextlib.suppress(SQLAlchemyError, OSError):
                self._leader_conn.invalidate()
            self._leader_conn = None

    def dispatch_due_jobs(self) -> int:
        """Send due jobs to the queue; each is marked in flight for one lease first.

        Jobs waiting on a rollout are checked here in one batch; only those whose rollout
        finished are sent, the others get their next check.
        """
        settings = get_settings()
        now = utcnow()
        with session_scope() as session:
            due = jobs_repo.claim_due_jobs(
                session, now, now + timedelta(seconds=settings.job_lease_seconds)
            )
        waiting = [job for job in due if is_batchable(job)]
        to_send = [job for job in due if not is_batchable(job)]
        try:
            to_send += check_waiting(waiting)
        except Exception:
            log.exception("batched readiness check failed; sending the jobs one by one")
            to_send += waiting
        unsent = [job.id for job in to_send]
        try:
            for job in to_send:
                self.app.send_task(RUN_JOB_TASK, args=[job.id], task_id=job.uuid)
                unsent.remove(job.id)
        finally:
            if unsent:
                with session_scope() as session:
                    jobs_repo.make_due(session, unsent, utcnow())
        return len(to_send) - len(unsent)

    def _run_chores(self) -> None:
        now = time.monotonic()
        for index, (every, chore) in enumerate(self.chores):
            if now - self._last_run.get(index, 0.0) >= every:
                self._last_run[index] = now
                try:
                    chore()
                except Exception:
                    log.exception("dispatcher chore %s failed", getattr(chore, "__name__", chore))
