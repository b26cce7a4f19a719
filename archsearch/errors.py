"""The one error type for failures a user can cause and fix.

The CLI catches :class:`UserError`, prints its message as one line on stderr and exits with
status 2. Anything else is a programming error and is allowed to crash loudly.
"""


class UserError(Exception):
    """A problem with the user's input (file, model, data, options); the message says what to do."""

    exit_code = 2


class RunFailed(Exception):
    """A run that finished but whose result cannot be trusted (its teacher is no better than
    feature extraction): the report is written, the CLI prints the message and exits with status 3."""

    exit_code = 3
