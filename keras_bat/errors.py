"""The error keras-bat raises for a mistake in what it was asked to do."""


class UsageError(ValueError):
    """A mistake in what was asked for: a setting, a name, a shape, a checkpoint
    that does not fit, an output folder that holds another run. The message
    names the mistake and how to mend it; `keras-bat` prints it in one line
    and exits with status 2. A ValueError, so `except ValueError` catches it."""
