"""Exceptions that mean "the user must do something", not "the code is broken", and the exit codes.

The CLI and ``tools/train_net.py`` print a :class:`UserError` as one line (``error: ...``) and
exit with :data:`EXIT_USER_ERROR`, with no traceback. Any other exception is a bug and keeps
its traceback.
"""

EXIT_OK = 0
EXIT_BUG = 1  # an unexpected exception (Python's own exit code for one): report it with its traceback
EXIT_USER_ERROR = 2  # bad flags, config, input file or environment: the message says what to do
EXIT_ITEMS_FAILED = 3  # the run finished, but no item succeeded or more than --max-failed did not
EXIT_SIGINT = 130  # stopped by Ctrl-C (SIGINT), 128 + 2 as a shell reports it
EXIT_SIGTERM = 143  # stopped by SIGTERM (SLURM pre-emption or time limit, kill), 128 + 15


class UserError(Exception):
    """A mistake or missing resource the user can fix; the message says how."""


class MissingWeightsError(UserError, FileNotFoundError):
    """A checkpoint is needed and is not on disk (nothing can be downloaded here)."""


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM (see :mod:`seg_suite.signals`).

    A subclass of KeyboardInterrupt, so everything that cleans up after Ctrl-C (``finally``
    blocks, context managers, the runner's journal) cleans up after SIGTERM the same way.
    """
