"""shindan: diagnostic-support AI for medical images."""

from shindan.errors import ShindanError

# The one place the version is written (pyproject.toml reads it from here): looking it up in
# the installed metadata costs 0.2 s at every start.
__version__ = "0.1.0"

__all__ = ["ShindanError", "__version__"]
