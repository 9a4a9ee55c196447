"""User-facing errors.

A :class:`ZooError` carries one line that names the problem and the fix. The CLI prints it
without a traceback and exits with status 2; library callers can catch it like any exception.
"""


class ZooError(Exception):
    """A problem the user can fix; ``str(err)`` is a one-line message naming problem and fix."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem}; {fix}")
