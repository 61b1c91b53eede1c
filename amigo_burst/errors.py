"""The one error type for user mistakes.

The CLI renders it as one red line and exits with code 2. Anything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad config, unknown stage, missing file..."""

    exit_code = 2
