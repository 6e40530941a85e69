"""The API reference page: /openapi.json rendered for people, by Jobcast itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Server, open_live, screenshot

METHODS = ("get", "post", "put", "patch", "delete")


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for key in node["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        node = target
    return node


@pytest.mark.parametrize(
    ("viewport", "scheme"),
    [({"width": 1000, "height": 900}, "light"), ({"width": 360, "height": 740}, "dark")],
    ids=["desktop-light", "phone-dark"],
)
def test_reference_page_renders_every_operation(
    page_for: Callable[..., Page], jobcast: Server, viewport: dict[str, int], scheme: str
) -> None:
    """The footer's "API reference" opens a readable page with every operation of
    /openapi.json: its summary, parameters, request body fields and responses, and every
    schema; from Jobcast alone, under the page's Content-Security-Policy."""
    page = page_for(viewport=viewport, color_scheme=scheme)
    document = jobcast.api.get("/openapi.json").json()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    open_live(page, jobcast)
    expect(page.get_by_role("link", name="openapi.json")).to_have_attribute("href", "/openapi.json")
    with page.expect_response("**/static/reference.html") as opened:
        page.get_by_role("link", name="API reference").click()
    assert "script-src 'self'" in opened.value.headers["content-security-policy"]

    operations = [
        (method, path, item[method])
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    ]
    expect(page.locator(".ref-op")).to_have_count(len(operations))
    for method, path, op in operations:
        section = page.locator(f'.ref-op[data-method="{method.upper()}"][data-path="{path}"]')
        expect(section.locator(".ref-summary")).to_have_text(op["summary"])
        statuses = section.locator(".ref-response").evaluate_all(
            "(items) => items.map((item) => item.dataset.status)"
        )
        assert statuses == list(op["responses"]), (method, path)
        fields = section.locator(".ref-params > .ref-field").evaluate_all(
            "(items) => items.map((item) => item.dataset.field)"
        )
        assert fields == [p["name"] for p in op.get("parameters", [])], (method, path)
        if "requestBody" in op:
            schema = resolve(document, op["requestBody"]["content"]["application/json"]["schema"])
            names = section.locator(".ref-body > .ref-field[data-field]").evaluate_all(
                "(items) => items.map((item) => item.dataset.field)"
            )
            assert names == list(schema["properties"]), (method, path)

    schemas = document["components"]["schemas"]
    expect(page.locator(".ref-schema")).to_have_count(len(schemas))
    for name, schema in schemas.items():
        card = page.locator(f'.ref-schema[data-schema="{name}"]')
        for field in schema.get("properties", {}):
            expect(card.locator(f'.ref-field[data-field="{field}"]')).to_have_count(1)

    # What a reader needs about a field: its type, whether it is required, its limits.
    create = page.locator('.ref-op[data-method="POST"][data-path="/api/jobs"]')
    owner = create.locator('.ref-body .ref-field[data-field="owner"]')
    expect(owner.locator(".ref-type")).to_have_text("string | null")
    expect(owner.locator(".ref-optional")).to_have_text("optional")
    expect(owner).to_contain_text("length 1\u2013200")
    limit = page.locator('.ref-op[data-method="GET"][data-path="/api/jobs"] [data-field="limit"]')
    expect(limit).to_contain_text("value 1\u20131000")
    expect(limit).to_contain_text("default 100")

    assert all(url.startswith(jobcast.url) for url in requests), requests
    assert page.evaluate("() => document.documentElement.scrollWidth") <= viewport["width"]
    screenshot(page, f"reference-{scheme}", full_page=False)
    page.goto(page.url.split("#")[0] + "#post_jobs")
    screenshot(page, f"reference-create-{scheme}", full_page=False)
