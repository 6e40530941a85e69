"""The demo panel's simulated workers (placeholder: filled in by the status-page work)."""

from __future__ import annotations

from starlette.routing import BaseRoute


class Demo:
    """Demo routes and the simulated worker tasks they start."""

    def __init__(self) -> None:
        self.routes: list[BaseRoute] = []

    async def aclose(self) -> None:
        """Cancel every simulated worker still running."""
        return
