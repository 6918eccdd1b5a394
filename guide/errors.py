"""Errors that reach a visitor. Programmer errors stay ValueError / TypeError."""

from __future__ import annotations

__all__ = ["GuideError", "TourError", "ModelUnavailable"]


class GuideError(Exception):
    """A problem a visitor or operator can act on; its message is shown as is."""


class TourError(GuideError):
    """A tour file is missing or invalid; `problems` lists every problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ModelUnavailable(GuideError):
    """A model pack or dependency is missing; the message says how to install it."""
