"""Errors a user can cause. The CLI prints them as one line ``error: ...`` and exits 2."""


class ShindanError(Exception):
    """Base class for every error caused by input, options or files."""


class InputError(ShindanError):
    """An input file is missing, unreadable or of the wrong kind."""


class ModelError(ShindanError):
    """A model name, card or weight file is unknown or invalid."""


class AnnotationError(ShindanError):
    """An annotation file cannot be parsed."""


class ServiceError(ShindanError):
    """A service folder, database, account or option of ``shindan serve``/``admin`` is invalid."""
