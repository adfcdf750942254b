"""Business logic shared by the Telegram handlers, the terminal chat and the CLI.

Nothing in here imports `telegram`.
"""


class UserError(ValueError):
    """Something the user did that we refuse; the message is shown to them as it is."""
