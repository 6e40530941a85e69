"""The newest state this process knows of the jobs it wrote lately.

A worker reports one job's progress one change after another; each change
is a compare-and-set on the job's stored version, output size and last write
(the feed position of the write that made the state). Deciding the next
change on the state this process wrote (or its feed listener saw) since,
instead of reading it back, saves a Redis round trip per change. The write
script still refuses a state that is no longer current, so a stale entry
costs one retry on a fresh read, never a lost or misapplied change.

Only jobs this process wrote are kept, at most ``size`` of them; the feed
listener keeps those fresh with every other process's changes and drops a
job once it is removed. Each is kept with its feed position, which is the
last write the script compares.
"""

from __future__ import annotations

from app.models import Job
from app.streams.events import Change, Output, Position


class RecentJobs:
    def __init__(self, size: int) -> None:
        self._size = size
        # Oldest write first, so the first key is the one to evict.
        self._jobs: dict[str, tuple[Position, Job]] = {}

    def get(self, job_id: str) -> tuple[Position, Job] | None:
        """The newest state known of the job, and the feed position of its write."""
        return self._jobs.get(job_id)

    def wrote(self, job: Job, position: Position, delivered: Position) -> None:
        """This process stored ``job`` at feed ``position``; its listener has delivered the
        feed up to ``delivered``."""
        known = self._jobs.pop(job.job_id, None)
        if known is None and delivered > position:
            # Delivered past this write while the job was not kept: whatever came after
            # it (another change, its removal) went by unseen.
            return
        if known is not None and known[0] > position:
            job, position = known[1], known[0]  # the listener already saw a newer change
        self._jobs[job.job_id] = position, job
        if len(self._jobs) > self._size:
            del self._jobs[next(iter(self._jobs))]

    def saw(self, change: Change) -> None:
        """The feed listener delivered ``change`` (from any process)."""
        known = self._jobs.get(change.job_id)
        if known is None or known[0] >= change.position:
            return
        if change.job is None:
            del self._jobs[change.job_id]
        else:
            self._jobs[change.job_id] = change.position, change.job

    def saw_output(self, output: Output, position: Position) -> None:
        """The feed listener delivered an append, at ``position``."""
        known = self._jobs.get(output.job_id)
        if known is None or known[0] >= position:
            return
        job = known[1]
        if job.version != output.version or (job.output_size or 0) != output.offset:
            del self._jobs[output.job_id]  # it missed a change: read the job next time
            return
        grown = job.model_copy(update={"output_size": output.next_offset})
        self._jobs[output.job_id] = position, grown

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def clear(self) -> None:
        self._jobs.clear()
