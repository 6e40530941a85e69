"""The manual's examples, run: every example in the READMEs (the project's, bench's and the
clients') and docs/.

docs/README.md ("Examples are tested") gives the rules to whoever writes a page.
In short: a ``python``, ``sh`` (``bash``, ``shell``, ``console``) or ``js``
(``javascript``) block says ``run`` or ``norun`` after its language; each ``run`` block
runs against a ``python -m app`` started with the settings its info string declares
(shared by the blocks that declare the same), ``127.0.0.1:8000`` standing for that
server; shell and Python blocks must exit 0, browser blocks must log and throw nothing
while this test plays the worker; ``serve=NAME`` marks a module that uvicorn serves for
the next ``run`` block. The settings table of docs/deployment.md must be the one ``make
docs`` writes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from app.settings import TABLE_END, TABLE_START, variables, with_table
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import seconds
from tests.e2e.conftest import ROOT, RunningServer, free_port

PAGES = sorted(
    [
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        ROOT / "clients" / "python" / "README.md",
        ROOT / "clients" / "js" / "README.md",
        *(ROOT / "docs").rglob("*.md"),
    ]
)
DEPLOYMENT = ROOT / "docs" / "deployment.md"
# The languages whose blocks must say `run` or `norun`, and how each runs.
LANGUAGES = {
    "python": "python",
    "py": "python",
    "sh": "sh",
    "bash": "sh",
    "shell": "sh",
    "console": "console",
    "js": "js",
    "javascript": "js",
}
EXAMPLE_ADDRESS = "127.0.0.1:8000"
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
SETTING = re.compile(r"^(JOBS_[A-Z_]+)=(.*)$")
EDGE = ["--http", "app.edge.protocol:HttpProtocol"]  # as the manual serves a module
BIN = Path(sys.executable).parent  # the dev venv's bin: jobcast, python3, uvicorn
JS_WAIT = 20  # seconds a browser example may take
QUIET = 1.0  # seconds without a new console line, once the worker is idle, that end one


@dataclass(frozen=True)
class Example:
    """One fenced block of a page: where it is, its info string, its code."""

    page: Path
    line: int  # of the opening fence, from 1
    language: str  # the info string's first word, lower-case
    words: tuple[str, ...]  # the rest of the info string
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str | None:
        """How it runs (python, sh, console, js), or None for other languages."""
        return LANGUAGES.get(self.language)

    @property
    def runs(self) -> bool:
        return "run" in self.words

    @property
    def settings(self) -> dict[str, str]:
        """The server settings it declares (``JOBS_X=value`` words)."""
        found = (SETTING.match(word) for word in self.words)
        return {match[1]: match[2] for match in found if match}

    @property
    def served_as(self) -> str | None:
        """The module name of a ``serve=NAME`` block."""
        for word in self.words:
            if word.startswith("serve="):
                return word.removeprefix("serve=")
        return None

    @property
    def wants_worker(self) -> bool:
        return self.kind == "js" or "worker" in self.words

    def problems(self) -> list[str]:
        """What is wrong with its marking; nothing for a well-marked block."""
        if self.kind is None:
            return []
        marks = [word for word in self.words if word in ("run", "norun")]
        if len(marks) != 1:
            return [
                f"{self.where}: say `run` or `norun` after `{self.language}` "
                '(docs/README.md, "Examples are tested")'
            ]
        known = set(variables())
        problems = [
            f"{self.where}: {name} is no setting (app/settings.py)"
            for name in self.settings
            if name not in known
        ]
        problems += [
            f"{self.where}: {word!r} means nothing here (run, norun, worker, serve=NAME, JOBS_X=…)"
            for word in self.words
            if word not in ("run", "norun", "worker")
            and not word.startswith("serve=")
            and not SETTING.match(word)
        ]
        return problems


def examples(page: Path) -> list[Example]:
    """The fenced blocks of ``page``, in order."""
    found: list[Example] = []
    lines = page.read_text().splitlines()
    number = 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        number += 1
        if opening is None or ("`" in opening["info"] and opening["fence"][0] == "`"):
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        start, body = number, []
        while number < len(lines):
            text = lines[number]
            number += 1
            stripped = text.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                break
            body.append(text[min(indent, len(text) - len(text.lstrip(" "))) :])
        language, *words = opening["info"].split() or [""]
        code = "\n".join(body) + "\n"
        found.append(Example(page, start, language.lower(), tuple(words), code))
    return found


def everything() -> list[Example]:
    return [example for page in PAGES for example in examples(page)]


@dataclass(frozen=True)
class Case:
    """A ``run`` block, and the module that serves it when a ``serve=`` block precedes it."""

    example: Example
    module: Example | None = None


def cases() -> list[Case]:
    found: list[Case] = []
    for page in PAGES:
        module: Example | None = None
        for example in examples(page):
            if example.served_as is not None:
                module = example
            elif example.runs and example.kind is not None:
                found.append(Case(example, module))
                module = None
    return found


# --- marking and generated parts ------------------------------------------------------


def test_every_example_is_marked() -> None:
    """Each python, sh and js block says run or norun, and names only real settings."""
    problems = [problem for example in everything() for problem in example.problems()]
    assert problems == [], "\n".join(problems)


def test_every_served_module_has_its_client() -> None:
    """A serve=NAME block is a python run block followed, on its page, by a run block."""
    for page in PAGES:
        blocks = examples(page)
        for index, example in enumerate(blocks):
            if example.served_as is None:
                continue
            assert example.kind == "python", f"{example.where}: a module is a python block"
            assert example.runs, f"{example.where}: a module says run"
            after = [b for b in blocks[index + 1 :] if b.runs and b.kind is not None]
            assert after, f"{example.where}: no run block after it"
            assert after[0].served_as is None, f"{example.where}: two modules in a row"


LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings (``## The `jobcast` command``:
    ``the-jobcast-command``; a repeated heading gets ``-1``, ``-2``…)."""
    found: set[str] = set()
    fenced = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        if fenced or not (heading := re.match(r"#{1,6} (.*)", line)):
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        repeat = 0
        while (f"{slug}-{repeat}" if repeat else slug) in found:
            repeat += 1
        found.add(f"{slug}-{repeat}" if repeat else slug)
    return found


def test_every_link_between_pages_leads_somewhere() -> None:
    """Each relative link names a file that exists and, after ``#``, a heading of it."""
    broken = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
        for link in LINK.finditer(text):
            target = link.group("target")
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto: — outside the repository
            path, _, anchor = target.partition("#")
            goal = (page.parent / path).resolve() if path else page
            if not goal.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and goal.suffix == ".md" and anchor not in anchors(goal):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == [], "\n".join(broken)


def test_the_runner_finds_the_examples() -> None:
    """The pages hold run blocks of every kind (a broken parser would find none)."""
    kinds = {case.example.kind for case in cases()}
    assert {"python", "sh", "js"} <= kinds
    assert any(case.module is not None for case in cases())


def test_the_settings_table_is_current() -> None:
    """docs/deployment.md's settings table is the one app/settings.py makes."""
    text = DEPLOYMENT.read_text()
    assert TABLE_START in text, f"docs/deployment.md lost its {TABLE_START} line"
    assert TABLE_END in text, f"docs/deployment.md lost its {TABLE_END} line"
    assert with_table(text) == text, (
        "the settings table in docs/deployment.md differs from app/settings.py: "
        "run `make docs` and commit the result"
    )


# --- running them ---------------------------------------------------------------------


@dataclass
class Target:
    """The server an example runs against: its address and an API key, if it has one."""

    base_url: str
    api_key: str | None

    def client(self) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx2.Client(base_url=self.base_url, headers=headers, timeout=seconds(5))


class Worker:
    """Plays the worker: every job that is not finished goes to processing, then completed."""

    DELAY = 0.5  # seconds a job is left as its example created it

    def __init__(self, target: Target) -> None:
        self.target = target
        self.stop = threading.Event()
        self.idle = threading.Event()  # the last look found nothing to do
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.seen: dict[str, float] = {}

    def __enter__(self) -> Worker:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        with self.target.client() as api:
            while not self.stop.wait(0.1):
                try:
                    self._look(api)
                except httpx2.HTTPError:
                    self.idle.clear()

    def _look(self, api: httpx2.Client) -> None:
        answer = api.get("/api/jobs", params={"limit": 1000})
        jobs = answer.json()["jobs"] if answer.status_code == 200 else []
        pending = [job for job in jobs if job["status"] in ("queued", "processing")]
        now = time.monotonic()
        for job in pending:
            first = self.seen.setdefault(job["jobId"], now)
            if now - first < self.DELAY:
                continue
            path = f"/api/jobs/{job['jobId']}"
            if job["status"] == "queued":
                change = {"status": "processing", "progress": 50, "message": "Working..."}
                api.patch(path, json=change)
                self.seen[job["jobId"]] = now - self.DELAY / 2
            else:
                api.post(path + "/complete", json={"documentId": "doc_example"})
        if pending:
            self.idle.clear()
        else:
            self.idle.set()


def run_code(example: Example, target: Target, folder: Path) -> None:
    """Run a python, sh or console example as a program; it must exit 0."""
    code = example.code.replace(EXAMPLE_ADDRESS, target.base_url.removeprefix("http://"))
    if example.kind == "python":
        script = folder / "example.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    else:
        if example.kind == "console":
            commands = [line[2:] for line in code.splitlines() if line.startswith("$ ")]
            code = "\n".join(commands) + "\n"
        script = folder / "example.sh"
        script.write_text(code)
        command = ["bash", "-euo", "pipefail", str(script)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_") and k != "JOBCAST_URL"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["JOBCAST_URL"] = target.base_url
    try:
        result = subprocess.run(
            command,
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=seconds(30),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{example.where} ran longer than {exc.timeout:g} s") from None
    assert result.returncode == 0, (
        f"{example.where} exited {result.returncode}\n--- stdout\n{result.stdout}"
        f"--- stderr\n{result.stderr}"
    )


def run_js(example: Example, target: Target, browser: Any) -> None:
    """Run a js example as a module script on the server's origin, while the worker works."""
    context = browser.new_context(bypass_csp=True)
    lines: list[str] = []
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on(
            "console",
            lambda message: (errors if message.type == "error" else lines).append(message.text),
        )
        page.on("pageerror", lambda error: errors.append(f"{error.message}\n{error.stack}"))
        # The page is a real answer of the server, so it has the server's origin and
        # address space (Chromium refuses a routed page's WebSockets to loopback); the
        # browser's own request for a favicon, which Jobcast does not serve, is answered here.
        page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        page.goto(f"{target.base_url}/healthz")
        code = example.code.replace(EXAMPLE_ADDRESS, target.base_url.removeprefix("http://"))
        with Worker(target) as worker:
            page.add_script_tag(content=code, type="module")
            deadline = time.monotonic() + seconds(JS_WAIT)
            heard, last = 0, time.monotonic()
            while time.monotonic() < deadline and not errors:
                page.wait_for_timeout(100)  # lets Playwright deliver the page's events
                if len(lines) != heard:
                    heard, last = len(lines), time.monotonic()
                elif heard and worker.idle.is_set() and time.monotonic() - last >= QUIET:
                    break
    finally:
        context.close()
    assert errors == [], f"{example.where} failed in the browser:\n" + "\n".join(errors)
    assert lines, f"{example.where} logged nothing within {seconds(JS_WAIT):g} s"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright, as the browser tests launch it."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium")
        pytest.skip("install Debian's chromium for the browser examples: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def module_server(tmp_path: Path) -> Iterator[Callable[[Example], Target]]:
    """Factory: serve a ``serve=NAME`` block with uvicorn, as its page says; stopped at teardown."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def serve(module: Example) -> Target:
        name = module.served_as
        assert name is not None
        folder = tmp_path / "module"
        folder.mkdir()
        (folder / f"{name}.py").write_text(module.code)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
        env.update(module.settings)
        log = folder / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", f"{name}:app", "--port", str(port), *EDGE],
                cwd=folder,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        started.append((process, log))
        target = Target(f"http://127.0.0.1:{port}", None)
        deadline = time.monotonic() + seconds(15)
        while time.monotonic() < deadline:
            assert process.poll() is None, f"{module.where} did not serve:\n{log.read_text()}"
            try:
                if httpx2.get(target.base_url + "/healthz", timeout=1).status_code == 200:
                    return target
            except httpx2.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"{module.where} did not answer /healthz:\n{log.read_text()}")

    yield serve
    for process, log in started:
        process.terminate()
        try:
            process.wait(timeout=seconds(5))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert "Traceback" not in log.read_text(), log.read_text()


@pytest.mark.e2e
@pytest.mark.parametrize("case", cases(), ids=lambda case: case.example.where)
def test_example_runs(
    case: Case,
    shared_server: Callable[..., RunningServer],
    module_server: Callable[[Example], Target],
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """The example runs as written against a server with the settings it declares, and
    succeeds. The examples that declare the same settings share one server, as readers
    share theirs: an example may not count on being alone on it."""
    example = case.example
    if case.module is not None:
        target = module_server(case.module)
    else:
        running = shared_server(**example.settings)
        keys = example.settings.get("JOBS_API_KEY", "")
        target = Target(running.base_url, keys.split(",")[0] or None)
    if example.kind == "js":
        run_js(example, target, request.getfixturevalue("browser"))
    elif example.wants_worker:
        with Worker(target):
            run_code(example, target, tmp_path)
    else:
        run_code(example, target, tmp_path)
