"""The one exception type for bad user input; the CLI prints it as a single line."""


class InputError(ValueError):
    """A user-facing error: the message names the field and what is allowed, in one line."""
