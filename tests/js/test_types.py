"""The hand-written TypeScript types: every export used, checked by ``tsc --noEmit --strict``.

``clients/js/test/types/browser.tsx`` uses every export of ``jobcast`` and
``jobcast/react`` as a page or a React app would (with the DOM library);
``node.ts`` is a Node 20 service with the ``ws`` and ``eventsource`` packages
and no DOM library. Both import the package by its name, through its
``exports`` map, as an installed copy would be.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import seconds
from tests.js.npm import JS, Node

pytestmark = pytest.mark.timeout(seconds(600))

TYPES = JS / "test" / "types"
DECLARATIONS = ("jobcast.d.ts", "react.d.ts")


def exported_names() -> set[str]:
    names: set[str] = set()
    for declaration in DECLARATIONS:
        text = (JS / declaration).read_text()
        names.update(re.findall(r"^export (?:function|interface|type) (\w+)", text, re.MULTILINE))
    return names


def test_the_browser_example_uses_every_export() -> None:
    """Every function and type the declarations export appears in the browser example."""
    example = (TYPES / "browser.tsx").read_text()
    unused = {name for name in exported_names() if not re.search(rf"\b{name}\b", example)}
    assert "Job" in exported_names()
    assert unused == set()


@pytest.mark.parametrize("config", ["tsconfig.browser.json", "tsconfig.node.json"])
def test_examples_type_check_strictly(node: Node, config: str) -> None:
    """``tsc --noEmit --strict`` finds no error (and each ``@ts-expect-error`` one)."""
    result = subprocess.run(
        [node.bin("tsc"), "-p", str(TYPES / config), "--noEmit", "--strict"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=seconds(300),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
