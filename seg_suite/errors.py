"""Exceptions that mean "the user must do something", not "the code is broken".

The CLI prints these as one line (``error: ...``) and exits non-zero, with no traceback.
"""


class UserError(Exception):
    """A mistake or missing resource the user can fix; the message says how."""


class MissingWeightsError(UserError, FileNotFoundError):
    """A checkpoint is needed and is not on disk (nothing can be downloaded here)."""
