"""``python -m bench [--quick]``: Jobcast against its references, one table, one JSON file.

Everything runs on loopback, on free ports, started and stopped here. The servers
are pinned to core 0, the receiver, the publisher and wrk to core 1. Each figure
is taken in the same repetition as its reference, back to back, so ratios hold
on a noisy machine; every figure is the median of REPS repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import publisher
from bench.procs import (
    CLIENT_CORE,
    JOBCAST,
    NAIVE,
    RAW,
    RESULTS,
    ClientRun,
    ProcessSet,
    Server,
    ServerSpec,
    build_client,
    cpu_seconds,
    pin,
    rss_kib,
    start_client,
    stop_client,
)
from bench.report import Row, Series, machine, ratios, table

REPS = 3
PUBLISHERS = 4  # concurrent PATCH connections: keeps the server busy while one waits
PACED_RATE = 10.0
POLL_CONNECTIONS = 50
SSE_PATH = {"jobcast": "/api/jobs/events", "naive": "/events", "raw": "/events"}
MAX_PUBLISHES = 1_000_000  # a count bound on every publishing loop, beside the time bound
Publish = Callable[[asyncio.Event], Coroutine[Any, Any, int]]  # runs until the event is set


@dataclass(frozen=True)
class Plan:
    fanout_sizes: tuple[int, ...]
    memory_size: int
    warmup_ms: int
    window_ms: int
    paced_ms: int
    poll_seconds: int


QUICK = Plan((100, 1000), 1000, 500, 1500, 3000, 2)
FULL = Plan((100, 1000, 5000), 5000, 1000, 3000, 10_000, 5)


@dataclass
class Fanout:
    events_per_s: Series
    server_us_per_event: Series
    server_cpu_pct: Series
    receiver_cpu_pct: Series
    publisher_cpu_pct: Series
    p50_ms: Series
    p99_ms: Series

    @classmethod
    def empty(cls) -> Fanout:
        return cls(*(Series() for _ in range(7)))


class Bench:
    def __init__(self, plan: Plan, client: Path, procs: ProcessSet) -> None:
        self.plan = plan
        self.client = client
        self.procs = procs

    async def job_for(self, server: Server) -> str:
        if server.spec is JOBCAST:
            return await publisher.create_job(server.port)
        return "job_bench"  # the references take any id

    async def measure(
        self, server: Server, run: ClientRun, publishers: list[Publish], into: Fanout
    ) -> None:
        """One measurement: S receivers connected, publishers started, CPU over the window."""
        receiver = await start_client(self.client, run)
        stop = asyncio.Event()
        tasks = [asyncio.create_task(publish(stop)) for publish in publishers]
        try:
            await asyncio.sleep(run.warmup_ms / 1000)
            before = _cpu(server.pid)
            await asyncio.sleep(run.duration_ms / 1000)
            after = _cpu(server.pid)
            assert receiver.stdout is not None
            report = json.loads(await asyncio.wait_for(receiver.stdout.readline(), 30))
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
            await stop_client(receiver)
        _record(into, report, before, after, run.duration_ms / 1000)

    async def fanout(self, specs: dict[str, Server], mode: str, size: int) -> dict[str, Fanout]:
        """Saturated: PUBLISHERS connections PATCH (one job each) as fast as answered."""
        out = {name: Fanout.empty() for name in specs}
        for _ in range(REPS):
            for name, server in specs.items():  # interleaved: figure and references per rep
                jobs = [await self.job_for(server) for _ in range(PUBLISHERS)]
                floods: list[Publish] = [
                    functools.partial(publisher.flood, server.port, job, limit=MAX_PUBLISHES)
                    for job in jobs
                ]
                path = "/api/jobs/ws" if mode == "ws" else SSE_PATH[name]
                run = ClientRun(
                    mode, server.port, path, size, self.plan.warmup_ms, self.plan.window_ms,
                    max(1, size // 50),
                )  # fmt: skip
                await self.measure(server, run, floods, out[name])
        return out

    async def paced(self, specs: dict[str, Server], size: int) -> dict[str, Fanout]:
        """Unsaturated: one connection PATCHes one job PACED_RATE times a second."""
        out = {name: Fanout.empty() for name in specs}
        for _ in range(REPS):
            for name, server in specs.items():
                job = await self.job_for(server)
                pace: Publish = functools.partial(
                    publisher.paced, server.port, job, PACED_RATE, limit=MAX_PUBLISHES
                )
                run = ClientRun(
                    "sse", server.port, SSE_PATH[name], size, 500, self.plan.paced_ms, 1
                )
                await self.measure(server, run, [pace], out[name])
        return out

    async def memory(self, spec: ServerSpec, mode: str, size: int) -> float:
        """KiB of server RSS per idle connection, on a freshly started server."""
        server = self.procs.start_server(spec)
        try:
            await _warm(server)
            base = rss_kib(server.pid)
            path = "/api/jobs/ws" if mode == "ws" else SSE_PATH[spec.name]
            run = ClientRun(mode, server.port, path, size, 0, 2000, 0)
            receiver = await start_client(self.client, run)
            try:
                await asyncio.sleep(1.0)  # the WS subscribe frames and first writes land
                held = rss_kib(server.pid)
            finally:
                await stop_client(receiver)
        finally:
            self.procs.stop(server.proc)
        return (held - base) / size


async def _warm(server: Server) -> None:
    """One publish and one poll first, so lazy imports are not counted as connections."""
    job = await publisher.create_job(server.port) if server.spec is JOBCAST else "job_bench"
    conn = await publisher.Connection.open(server.port)
    try:
        await conn.request("PATCH", f"/api/jobs/{job}", publisher.change(0))
    finally:
        conn.close()


def _cpu(server_pid: int) -> tuple[float, float]:
    """Server CPU and this process's (the publisher's); the receiver reports its own."""
    return cpu_seconds(server_pid), cpu_seconds(os.getpid())


def _record(
    into: Fanout,
    report: dict[str, float],
    before: tuple[float, float],
    after: tuple[float, float],
    window: float,
) -> None:
    rate = report["events"] / report["seconds"]
    server_cpu = after[0] - before[0]
    into.events_per_s.add(rate)
    into.server_us_per_event.add(server_cpu * 1e6 / max(rate * window, 1))
    into.server_cpu_pct.add(100 * server_cpu / window)
    into.receiver_cpu_pct.add(100 * report["cpu_s"] / report["seconds"])
    into.publisher_cpu_pct.add(100 * (after[1] - before[1]) / window)
    into.p50_ms.add(report["p50_ms"])
    into.p99_ms.add(report["p99_ms"])


def wrk(port: int, path: str, seconds: int) -> tuple[float, float]:
    """Requests/s and p99 ms from wrk (1 thread, 50 connections, on the client core)."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{POLL_CONNECTIONS}", f"-d{seconds}s", "--latency",
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
        preexec_fn=lambda: pin(0, CLIENT_CORE),
    ).stdout  # fmt: skip
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    if rps is None or p99 is None:
        raise RuntimeError(f"wrk printed what this does not parse:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return float(rps.group(1)), float(p99.group(1)) * scale


async def polling(bench: Bench, jobcast: Server, naive: Server) -> dict[str, Series]:
    job = await publisher.create_job(jobcast.port)
    conn = await publisher.Connection.open(jobcast.port)
    body = await conn.request("GET", f"/api/jobs/{job}")
    conn.close()
    # The bare endpoint answers exactly the bytes Jobcast answers.
    conn = await publisher.Connection.open(naive.port)
    await conn.request("POST", "/poll-body", body)
    conn.close()
    out = {key: Series() for key in ("jobcast_rps", "jobcast_p99", "bare_rps", "bare_p99")}
    for _ in range(REPS):
        for name, server in (("jobcast", jobcast), ("bare", naive)):
            rps, p99 = wrk(server.port, f"/api/jobs/{job}", bench.plan.poll_seconds)
            out[f"{name}_rps"].add(rps)
            out[f"{name}_p99"].add(p99)
    return out


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def detail(r: Fanout) -> str:
    """µs of server CPU per event · CPU % server/receiver/publisher · p50/p99 ms."""
    cpu = "/".join(s.show(0) for s in (r.server_cpu_pct, r.receiver_cpu_pct, r.publisher_cpu_pct))
    return f"{r.server_us_per_event.show(1)} · {cpu} · {r.p50_ms.show(1)}/{r.p99_ms.show(1)}"


def fanout_rows(label: str, size: int, res: dict[str, Fanout]) -> list[Row]:
    job = res["jobcast"]
    rows = [
        Row(
            f"{label} S={size} events/s vs naive",
            job.events_per_s.show(0),
            "naive " + res["naive"].events_per_s.show(0),
            ratios(job.events_per_s, res["naive"].events_per_s).show(2),
            "≥ 2x" if size == 1000 else "",
            verdict(ratios(job.events_per_s, res["naive"].events_per_s).median >= 2)
            if size == 1000 else "",
        ),
        Row(
            f"{label} S={size} events/s vs raw",
            "",
            "raw " + res["raw"].events_per_s.show(0),
            ratios(job.events_per_s, res["raw"].events_per_s).show(2),
            "≥ 0.6x" if size == 1000 else "",
            verdict(ratios(job.events_per_s, res["raw"].events_per_s).median >= 0.6)
            if size == 1000 else "",
        ),
    ]  # fmt: skip
    for name in ("jobcast", "naive", "raw"):
        r = res[name]
        rows.append(
            Row(
                f"  {name}: server µs/event · CPU% server/receiver/publisher · p50/p99 ms",
                "",
                detail(r),
                "",
                "",
                "",
            )
        )
    return rows


def ws_rows(size: int, res: dict[str, Fanout]) -> list[Row]:
    job = res["jobcast"]
    return [
        Row(
            f"WS fan-out S={size} events/s (no WS reference)",
            job.events_per_s.show(0),
            "",
            "",
            "≥ 2x naive, ≥ 0.6x raw",
            "not measured",
        ),
        Row(
            "  jobcast WS: server µs/event · CPU% server/receiver/publisher · p50/p99 ms",
            "",
            detail(job),
            "",
            "",
            "",
        ),
    ]


def paced_rows(size: int, res: dict[str, Fanout]) -> list[Row]:
    job, raw = res["jobcast"], res["raw"]
    return [
        Row(
            f"paced {PACED_RATE:g}/s S={size} p50 ms",
            job.p50_ms.show(2),
            "raw " + raw.p50_ms.show(2),
            ratios(job.p50_ms, raw.p50_ms).show(1),
            "",
            "",
        ),
        Row(
            f"paced {PACED_RATE:g}/s S={size} p99 ms",
            job.p99_ms.show(2),
            "raw " + raw.p99_ms.show(2),
            ratios(job.p99_ms, raw.p99_ms).show(1),
            "≤ 25 ms",
            verdict(job.p99_ms.median <= 25),
        ),
    ]


def polling_rows(res: dict[str, Series]) -> list[Row]:
    ratio = ratios(res["jobcast_rps"], res["bare_rps"])
    return [
        Row(
            f"poll GET req/s ({POLL_CONNECTIONS} conns, wrk)",
            res["jobcast_rps"].show(0),
            "bare Starlette " + res["bare_rps"].show(0),
            ratio.show(2),
            "≥ 0.8x",
            verdict(ratio.median >= 0.8),
        ),
        Row(
            "poll GET p99 ms",
            res["jobcast_p99"].show(2),
            "bare Starlette " + res["bare_p99"].show(2),
            ratios(res["jobcast_p99"], res["bare_p99"]).show(1),
            "",
            "",
        ),
    ]


def memory_rows(size: int, res: dict[str, Series]) -> list[Row]:
    sse = ratios(res["jobcast_sse"], res["naive_sse"])
    return [
        Row(
            f"RSS KiB per idle SSE conn S={size}",
            res["jobcast_sse"].show(1),
            "naive " + res["naive_sse"].show(1),
            sse.show(2),
            "≤ 16 KiB",
            verdict(res["jobcast_sse"].median <= 16),
        ),
        Row(
            f"RSS KiB per idle WS conn S={size}",
            res["jobcast_ws"].show(1),
            "",
            "",
            "≤ 16 KiB",
            verdict(res["jobcast_ws"].median <= 16),
        ),
    ]


async def run(plan: Plan, client: Path, procs: ProcessSet) -> tuple[list[Row], dict[str, Any]]:
    bench = Bench(plan, client, procs)
    rows: list[Row] = []
    data: dict[str, Any] = {}
    # Memory first, on fresh servers: later runs would leave freed memory to reuse.
    mem = {key: Series() for key in ("jobcast_sse", "naive_sse", "jobcast_ws")}
    for _ in range(REPS):
        mem["jobcast_sse"].add(await bench.memory(JOBCAST, "sse", plan.memory_size))
        mem["naive_sse"].add(await bench.memory(NAIVE, "sse", plan.memory_size))
        mem["jobcast_ws"].add(await bench.memory(JOBCAST, "ws", plan.memory_size))
    data["memory"] = {k: v.values for k, v in mem.items()}

    servers = {spec.name: procs.start_server(spec) for spec in (JOBCAST, NAIVE, RAW)}
    for server in servers.values():
        await _warm(server)
    for size in plan.fanout_sizes:
        res = await bench.fanout(servers, "sse", size)
        rows += fanout_rows("SSE fan-out", size, res)
        data[f"sse_fanout_{size}"] = {k: vars(v) for k, v in res.items()}
    ws = await bench.fanout({"jobcast": servers["jobcast"]}, "ws", 1000)
    rows += ws_rows(1000, ws)
    data["ws_fanout_1000"] = {k: vars(v) for k, v in ws.items()}
    paced = await bench.paced({"jobcast": servers["jobcast"], "raw": servers["raw"]}, 1000)
    rows += paced_rows(1000, paced)
    data["paced_1000"] = {k: vars(v) for k, v in paced.items()}
    if shutil.which("wrk"):
        poll = await polling(bench, servers["jobcast"], servers["naive"])
        rows += polling_rows(poll)
        data["polling"] = {k: v.values for k, v in poll.items()}
    rows += memory_rows(plan.memory_size, mem)
    return rows, data


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (about 2 minutes)")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    nofile = raise_nofile()
    pin(0, CLIENT_CORE)  # this process publishes: it belongs on the client core
    client = build_client()
    if client is None:
        raise SystemExit("bench: gcc is needed to build the C receiver (apt-get install gcc)")
    procs = ProcessSet()
    # SIGTERM stops the run like Ctrl-C does: through the clean-up below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    try:
        rows, data = uvloop.run(run(plan, client, procs))
    except KeyboardInterrupt:
        raise SystemExit("bench: interrupted (every process it started is stopped)") from None
    finally:
        procs.close()
    info = machine()
    title = _title(info, nofile, time.monotonic() - started)
    print(table(title, rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": info,
        "plan": vars(plan),
        "results": data,
        "table": [vars(r) for r in rows],
    }
    (RESULTS / "latest.json").write_text(json.dumps(payload, indent=2, default=str))


def _title(info: dict[str, str], nofile: int, seconds: float) -> list[str]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    libs = ", ".join(f"{name} {info[name]}" for name in ("starlette", "uvicorn", "uvloop"))
    libs += ", " + ", ".join(
        f"{name} {info[name]}" for name in ("httptools", "sse-starlette", "websockets", "orjson")
    )
    return [
        f"Jobcast benchmark — {now}, `{info['command']}` ({seconds:.0f} s)",
        f"Machine: {info['nproc']} cores, {info['cpu']}, Linux {info['kernel']}, "
        f"Python {info['python']}; {libs}; RLIMIT_NOFILE {nofile}",
        "Server pinned to core 0; C epoll receiver + publisher (4 keep-alive PATCH "
        "connections) + wrk on core 1. SSE: the all-jobs stream. Each cell: median "
        f"[min..max] of {REPS} interleaved repetitions; ratio = median of per-repetition ratios.",
    ]


if __name__ == "__main__":
    main()
