"""Business logic shared by the Telegram handlers, the terminal chat and the CLI.

Nothing in here imports `telegram`.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user did that we refuse; the message is shown to them as it is.

    Errors made with `UserError.about(key, ...)` can also be shown in the user's language.
    """

    def __init__(self, message: str, *, key: str | None = None, **params: object) -> None:
        super().__init__(message)
        self.key = key
        self.params = params

    @classmethod
    def about(cls, key: str, **params: object) -> UserError:
        from bot.i18n import t

        return cls(t(key, None, **params), key=key, **params)

    def localized(self, language_code: str | None) -> str:
        if self.key is None:
            return str(self)
        from bot.i18n import t

        return t(self.key, language_code, **self.params)
