"""Errors that reach a visitor. Programmer errors stay ValueError / TypeError."""

from __future__ import annotations

__all__ = ["GuideError", "TourError", "ModelUnavailable"]


class GuideError(Exception):
    """A problem a visitor or operator can act on; its message is shown as is.

    One made with `GuideError.say(key, **values)` can also be put in the visitor's language:
    `error.visitor("de")` (guide.messages); str(error) is the English one, for logs and operators.
    """

    key: str | None = None
    values: dict = {}

    @classmethod
    def say(cls, key: str, **values) -> GuideError:
        from .messages import message

        error = cls(message(key, "en", **values))
        error.key, error.values = key, values
        return error

    def visitor(self, lang: str | None) -> str:
        """The message in `lang`, when it has a key (else as raised)."""
        if self.key is None or not lang:
            return str(self)
        from .messages import message

        return message(self.key, lang, **self.values)


class TourError(GuideError):
    """A tour file is missing or invalid; `problems` lists every problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ModelUnavailable(GuideError):
    """A model pack or dependency is missing; the message says how to install it."""
