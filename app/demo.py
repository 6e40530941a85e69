"""The demo panel's server side: sample jobs driven by simulated workers.

    GET  /api/demo        {"enabled": true, "jobTypes": [...]}: the page shows its panel
    POST /api/demo/jobs   {"jobType": "file_processing"} → 201 {jobId, status, timestamp}

Each sample job is created and advanced through the in-process library
(:mod:`app.library`), exactly as a worker living in the server's process
would: realistic, type-specific steps with the Jobs API's messages over roughly
5 to 15 seconds, and about one run in five fails with a realistic error. Some
produce output as they go: a file is processed with a log line per step
(kind ``log``), and an agent streams its answer a few tokens at a time (kind
``token``), at about the pace a model writes.
The workers are asyncio tasks kept in a set; at most :data:`MAX_RUNNING`
run at once (more answers 429) and :meth:`Demo.aclose` cancels them all.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app import library
from app.api import json_response, read_body
from app.errors import JobsError
from app.models import JOB_TYPES, JobCreated, JobType, RequestModel, encode
from app.validation import parse

logger = logging.getLogger("jobcast")

MAX_RUNNING = 100
"""Simulated workers allowed at once; a request past it answers 429."""

FAILURE_RATE = 0.2
TOKENS_PER_SECOND = 40.0  # an agent's answer streams at about a model's pace
TOKEN_BATCH_SECONDS = 0.1  # tokens are appended in batches, as a buffered writer sends them


class DemoJob(RequestModel):
    """Body of ``POST /api/demo/jobs``."""

    job_type: JobType = "generic"


@dataclass(frozen=True, slots=True)
class Script:
    """How a simulated worker of one job type goes about its work."""

    queued: str
    steps: tuple[tuple[float, str], ...]  # (progress at the start of the step, message)
    done: str
    errors: tuple[str, ...]
    document_prefix: str | None  # completes with a documentId when set
    metadata: Callable[[random.Random], dict[str, Any]]
    output: Literal["log", "answer"] | None = None  # a log line per step, or a streamed answer


def _file_metadata(rng: random.Random) -> dict[str, Any]:
    name = rng.choice(
        ["contract.pdf", "invoice-2024-113.pdf", "lease-agreement.docx", "scan-0042.png"]
    )
    return {"fileName": name, "fileSize": rng.randrange(40_000, 8_000_000), "demo": True}


def _analysis_metadata(rng: random.Random) -> dict[str, Any]:
    return {"documentId": f"doc_{secrets.token_hex(4)}", "demo": True}


def _agent_metadata(rng: random.Random) -> dict[str, Any]:
    task = rng.choice(
        ["Summarize the Q3 vendor contracts", "Draft a renewal reminder", "Compare two NDAs"]
    )
    return {"task": task, "demo": True}


# What the sample agent answers, by its task: written out a few tokens at a time.
ANSWERS = {
    "Summarize the Q3 vendor contracts": (
        "Across the 14 vendor contracts signed in Q3, three themes stand out. "
        "First, payment terms moved from net-30 to net-45 in nine of them. "
        "Second, four renewals added a 5% annual price cap. "
        "Third, two contracts (Acme Logistics and Northwind) lack a termination-for-"
        "convenience clause, which legal should review before December."
    ),
    "Draft a renewal reminder": (
        "Hi Dana, a quick reminder that your Jobcast subscription renews on January 15. "
        "Nothing is needed from you if your plan stays the same. If you would like to "
        "change seats or billing details, reply to this message before January 8 and "
        "we will update it. Thank you for working with us!"
    ),
    "Compare two NDAs": (
        "The two NDAs differ in three places. The 2023 draft protects information for "
        "three years, the 2024 one for five. Only the 2024 draft makes it mutual. "
        "And the 2024 draft names Delaware law, where the earlier one named New York. "
        "Everything else, including the carve-outs, matches word for word."
    ),
}


def tokens_of(text: str) -> list[str]:
    """The text in pieces about a model's tokens long: words with their leading space,
    long words split; joined back they are the text."""
    pieces = re.findall(r" ?[^ ]+", text)
    return [piece[i : i + 6] for piece in pieces for i in range(0, len(piece), 6)]


def _log_line(message: str, progress: float, rng: random.Random) -> str:
    """A worker's log line for a step: what it is doing, and a plausible detail."""
    detail = rng.choice(
        [
            f"{rng.uniform(0.4, 9.5):.1f} MB in {rng.randrange(80, 900)} ms",
            f"page {rng.randrange(1, 40)} of {rng.randrange(40, 120)}",
            f"{rng.randrange(2, 60)} objects found",
            "cache hit" if rng.random() < 0.5 else "cache miss",
        ]
    )
    return f"[{progress:3.0f}%] {message.rstrip('.')}: {detail}"


def _generic_metadata(rng: random.Random) -> dict[str, Any]:
    return {"items": rng.choice([250, 500, 1000]), "demo": True}


SCRIPTS: dict[JobType, Script] = {
    "file_processing": Script(
        queued="Upload queued",
        steps=(
            (5, "Uploading file to storage..."),
            (30, "Extracting document data..."),
            (60, "Analyzing document structure..."),
            (85, "Generating preview..."),
        ),
        done="Document processed successfully",
        errors=("Invalid file format", "File is password-protected", "File exceeds 50 MB limit"),
        document_prefix="doc_",
        metadata=_file_metadata,
        output="log",
    ),
    "document_analysis": Script(
        queued="Starting analysis...",
        steps=(
            (5, "Loading document..."),
            (25, "Analyzing document structure..."),
            (55, "Extracting key terms..."),
            (80, "Generating insights..."),
        ),
        done="Analysis completed",
        errors=("Failed to parse document", "Document language not supported"),
        document_prefix="doc_",
        metadata=_analysis_metadata,
    ),
    "llm_agent": Script(
        queued="Agent queued",
        steps=(
            (5, "Planning next steps..."),
            (25, "Searching knowledge base..."),
            (55, "Calling tools..."),
            (80, "Drafting response..."),
        ),
        done="Agent run completed",
        errors=("Model rate limit exceeded", "Tool call timed out after 30s"),
        document_prefix=None,
        metadata=_agent_metadata,
        output="answer",
    ),
    "generic": Script(
        queued="Queued",
        steps=(
            (5, "Preparing batch..."),
            (20, "Processing items..."),
            (75, "Writing results..."),
            (90, "Finalizing..."),
        ),
        done="Batch completed",
        errors=("Connection to data source lost",),
        document_prefix=None,
        metadata=_generic_metadata,
    ),
}


class Demo:
    """Demo routes and the simulated worker tasks they start."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        offered: bool = True,
        rng: random.Random | None = None,
        speed: float = 1.0,
    ) -> None:
        """``enabled``: the routes that start jobs exist. ``offered``: the page shows the panel
        (not on a protected server, where starting a job needs the API key)."""
        self._offered = enabled and offered
        self._rng = rng or random.Random()
        self._speed = speed
        self._tasks: set[asyncio.Task[None]] = set()
        # GET /api/demo answers even when the demo is off, so the page's probe
        # never meets a 404 (a console error in every browser).
        self.routes: list[BaseRoute] = [Route("/api/demo", self.describe, methods=["GET"])]
        if enabled:
            self.routes.append(Route("/api/demo/jobs", self.start, methods=["POST"]))

    async def describe(self, _: Request) -> Response:
        """What the page's demo panel offers; its presence is the panel's cue to show."""
        job_types = JOB_TYPES if self._offered else ()
        return json_response(orjson.dumps({"enabled": self._offered, "jobTypes": job_types}))

    async def start(self, request: Request) -> Response:
        """Create a sample job and start its simulated worker."""
        job_type = parse(DemoJob, await read_body(request)).job_type
        if len(self._tasks) >= MAX_RUNNING:
            raise HTTPException(
                429, f"{MAX_RUNNING} demo jobs are already running", {"Retry-After": "5"}
            )
        script = SCRIPTS[job_type]
        metadata = script.metadata(self._rng)
        job = await library.create_job(job_type=job_type, message=script.queued, metadata=metadata)
        agent_answer = ANSWERS.get(metadata.get("task", ""), "")
        work = self._work(job.job_id, script, agent_answer)
        task = asyncio.create_task(work, name=f"demo {job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        answer = JobCreated(job_id=job.job_id, status=job.status, timestamp=job.updated_at)
        return json_response(encode(answer), 201, {"Location": f"/api/jobs/{job.job_id}"})

    async def aclose(self) -> None:
        """Cancel every simulated worker still running."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _work(self, job_id: str, script: Script, answer: str = "") -> None:
        try:
            await self._run(job_id, script, answer)
        except JobsError as exc:
            # Someone else finished or removed the job (a PATCH from outside,
            # a clean-up): the worker has nothing left to do.
            logger.info("demo worker for %s stopped: %s", job_id, exc)

    async def _run(self, job_id: str, script: Script, answer: str) -> None:
        rng = self._rng
        plan = _plan(script, rng)
        tokens = tokens_of(answer) if script.output == "answer" else []
        failing_at = (
            rng.randrange(1, len(plan)) if rng.random() < FAILURE_RATE and len(plan) > 1 else None
        )
        pause = rng.uniform(5, 15) / (len(plan) + 2)  # the queue wait, the plan, the finish
        await self._sleep(pause * rng.uniform(0.5, 1.5))
        for index, (progress, message) in enumerate(plan):
            if index == failing_at:
                await library.fail_job(job_id, rng.choice(script.errors))
                return
            # Logged before it is reported, so the report's outputSize counts it.
            if script.output == "log" and (index == 0 or plan[index - 1][1] != message):
                line = _log_line(message, progress, rng)
                await library.append_job_output(job_id, [{"data": line, "kind": "log"}])
            job = await library.update_job_with_notification(
                job_id, status="processing", progress=progress, message=message
            )
            if job.cancel_requested:  # as a real worker does: stop, and say why
                await library.fail_job(job_id, "canceled", job.cancel_reason or "Canceled")
                return
            if tokens and progress >= script.steps[-1][0]:  # the last step writes the answer
                if not await self._stream(job_id, tokens, progress, message):
                    return
                break  # written to 99 %: what is left of the plan would go back
            await self._sleep(pause * rng.uniform(0.6, 1.4))
        document_id = (
            None
            if script.document_prefix is None
            else script.document_prefix + secrets.token_hex(6)
        )
        await library.complete_job(job_id, document_id, script.done)

    async def _stream(self, job_id: str, tokens: list[str], progress: float, message: str) -> bool:
        """Append the answer a batch of tokens at a time, at a model's pace, reporting
        progress after the first batch and then every second; False when a cancel was
        asked for meanwhile (the job is failed as canceled then)."""
        batch = max(1, round(TOKENS_PER_SECOND * TOKEN_BATCH_SECONDS))
        batches_a_second = round(1 / TOKEN_BATCH_SECONDS)
        for number, start in enumerate(range(0, len(tokens), batch)):
            chunks = [{"data": token, "kind": "token"} for token in tokens[start : start + batch]]
            await library.append_job_output(job_id, chunks)
            if number % batches_a_second == 0:
                written = (start + len(chunks)) / len(tokens)
                job = await library.update_job_with_notification(
                    job_id, progress=round(progress + (99 - progress) * written), message=message
                )
                if job.cancel_requested:
                    await library.fail_job(job_id, "canceled", job.cancel_reason or "Canceled")
                    return False
            await self._sleep(TOKEN_BATCH_SECONDS)
        return True

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self._speed)


def _plan(script: Script, rng: random.Random) -> list[tuple[float, str]]:
    """Every update the worker sends: each step, then a tick or two within it."""
    plan: list[tuple[float, str]] = []
    bounds = [progress for progress, _ in script.steps[1:]] + [100.0]
    for (start, message), end in zip(script.steps, bounds, strict=True):
        plan.append((start, message))
        ticks = rng.randint(1, 2)
        for tick in range(1, ticks + 1):
            plan.append((round(start + (end - start) * tick / (ticks + 1)), message))
    return plan
