"""The page's ``static/jobcast.js`` is the package's module, byte for byte."""

from __future__ import annotations

from tests.js.npm import JS, ROOT


def test_static_jobcast_js_is_the_package_module() -> None:
    """static/jobcast.js and clients/js/jobcast.js are identical (``make js`` copies it)."""
    package = (JS / "jobcast.js").read_bytes()
    page = (ROOT / "static" / "jobcast.js").read_bytes()
    assert page == package, "static/jobcast.js differs from clients/js/jobcast.js: run `make js`"
