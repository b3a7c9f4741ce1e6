"""The one error base class, and the exit statuses of every verb (README, "Exit status").

A :class:`G2GError` means the user's input or environment is wrong, never a bug:
the CLI prints its one-line message and exits with ``EXIT_USAGE`` (a flag value no
verb accepts) or ``EXIT_INPUT`` (input, model or environment). Everything else
that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0  # everything asked for was done
EXIT_SKIPPED = 1  # done, but some inputs were skipped, and --strict was given
EXIT_USAGE = 2  # a bad option or option value
EXIT_INPUT = 3  # bad input, model or environment (unreadable folder, full disk, missing weights)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM (train: after writing a checkpoint)


class G2GError(ValueError):
    """The user's input or environment is wrong: a one-line message. ``usage=True`` for a bad option value."""

    def __init__(self, message: str = "", usage: bool = False):
        super().__init__(message)
        self.usage = usage

    @property
    def exit_code(self) -> int:
        return EXIT_USAGE if self.usage else EXIT_INPUT


def check_options(checks: list[tuple[bool, str]], error: type[G2GError] = G2GError) -> None:
    """Raise ``error`` as a usage error with the message of the first check that failed."""
    for ok, message in checks:
        if not ok:
            raise error(message, usage=True)
