"""What stops a session before or after it measures, and the exit status each one means.

Every error a caller (the command line) must tell apart is a :class:`SessionError` whose
``code`` is the process's exit status (the table in :mod:`msgwatch.cli.main`), and whose
``option`` names the command-line option at fault when there is one: the command line shows
those as usage errors of that option, the others as one line on stderr.

Light on purpose (nothing of msgwatch is imported): ``msgwatch --help`` loads this module.
"""

from __future__ import annotations

from collections.abc import Iterable

USAGE = 2
"""Wrong usage: a malformed option value, a malformed fence."""
CATALOGUE = 3
"""The catalogue is invalid, or a named service is not in it."""
OUTPUT = 4
"""The measurements could not be written (the spool, the output file, the state directory)."""
ENVIRONMENT = 5
"""The environment lacks something the run needs (consent to call tests, a terminal to ask)."""


class SessionError(Exception):
    """A session could not do what it was asked; ``code`` is the exit status it means."""

    def __init__(self, message: str, code: int, option: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.option = option
        """The option at fault (``--functions``), for a usage error of one option."""


def option_error(message: str, option: str) -> SessionError:
    """A usage error of one option (exit status 2)."""
    return SessionError(message, USAGE, option)


def did_you_mean(wrong: Iterable[str], known: Iterable[str]) -> str:
    """`` (did you mean whatsapp?)`` for the closest known names, or ``""``: the end of an error
    that names something unknown."""
    import difflib

    choices = sorted(set(known))
    guesses: list[str] = []
    for name in wrong:
        for guess in difflib.get_close_matches(name, choices, n=1, cutoff=0.6):
            if guess not in guesses:
                guesses.append(guess)
    return f" (did you mean {', '.join(guesses)}?)" if guesses else ""
