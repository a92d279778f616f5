"""The one exception for user mistakes: bad arguments, bad files, bad configurations."""


class PwmprError(ValueError):
    """A problem the user can fix; the CLI prints it on one line and exits with code 2.

    Subclassing ValueError keeps the engine's promise that bad input raises ValueError.
    """
