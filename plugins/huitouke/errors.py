"""The errors that are a user's mistake, not a bug: a bad file, option, configuration or cell.

The CLI prints such an error as one line naming where the problem is (file, line, field) and
exits with status 2; ``--debug`` shows the traceback. Anything else is a bug: one line with its
class and place, exit status 4 (docs/cli.md). Messages never carry a phone number, e-mail
address or name (huitouke.pii).
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user: the message says what is wrong and where, in one line."""
