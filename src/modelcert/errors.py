"""Errors a user can cause: the CLI turns them into one line and exit code 2, the API
into a 4xx naming the field."""

from __future__ import annotations


class UserError(Exception):
    """Bad input; `field` names what was wrong when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFoundError(UserError):
    """Something the user named does not exist."""


class StoreUnavailable(Exception):
    """The database stayed unreachable for as long as the caller may wait (or the process
    is stopping). Says nothing about the model: a durable certification stays pending
    and resumes; an in-process one is abandoned with this message."""
