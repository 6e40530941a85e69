"""Statistics and the one printed table."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

LIBRARIES = ("starlette", "uvicorn", "uvloop", "httptools", "sse-starlette", "websockets", "orjson")


@dataclass
class Series:
    """Repetitions of one figure; shown as median [min..max]."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def show(self, digits: int = 1) -> str:
        if not self.values:
            return "n/a"
        low, high = min(self.values), max(self.values)
        return f"{_num(self.median, digits)} [{_num(low, digits)}..{_num(high, digits)}]"


def _num(value: float, digits: int) -> str:
    if abs(value) >= 10_000:
        return f"{value / 1000:.{max(digits - 1, 0)}f}k"
    return f"{value:.{digits}f}"


def ratios(figure: Series, reference: Series) -> Series:
    """Per-repetition ratios: each pair was measured back to back, so noise cancels."""
    pairs = zip(figure.values, reference.values, strict=False)
    return Series([a / b for a, b in pairs if b])


def machine() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = {name: _version(name) for name in LIBRARIES}
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        **versions,
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


@dataclass(frozen=True)
class Row:
    figure: str
    jobcast: str
    reference: str
    ratio: str
    target: str
    verdict: str


def table(title: list[str], rows: list[Row]) -> str:
    header = Row("figure", "Jobcast", "reference", "ratio", "target", "met")
    cells = [header, *rows]
    widths = [max(len(getattr(row, name)) for row in cells) for name in Row.__annotations__]

    def line(row: Row) -> str:
        values = [getattr(row, name) for name in Row.__annotations__]
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([*title, "", line(header), rule, *(line(row) for row in rows)])
