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
