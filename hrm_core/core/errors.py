"""The project's own exceptions.

Errors a user can cause (bad files, bad config) must say which file, which rule and show an
example, so that the fix is obvious without reading a traceback from inside pandas or DuckDB.
"""

from __future__ import annotations


class HRMError(Exception):
    """Base class of every error the project raises on purpose."""


class DataError(HRMError):
    """Input data that breaks a rule: names the file, the rule and an example."""

    def __init__(self, file: str, rule: str, example: str = "") -> None:
        self.file = file
        self.rule = rule
        self.example = example
        message = f"{file}: {rule}"
        if example:
            message += f" (example: {example})"
        super().__init__(message)

    def __reduce__(self) -> tuple:
        """Rebuilt from its parts, so that an error raised in a worker process reaches the caller."""
        return DataError, (self.file, self.rule, self.example)


class ConfigError(HRMError):
    """A configuration file or value that cannot be used."""
