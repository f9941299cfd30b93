"""The one exception type of the data side: bad input files."""
from __future__ import annotations

from hybridjax.errors import UserError


class DataError(UserError, ValueError):
    """An input file is missing, unreadable or inconsistent.

    The message always names the file (and the field or window) and says what is wrong, so a bad recording
    among hundreds can be found without a debugger.
    """

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
