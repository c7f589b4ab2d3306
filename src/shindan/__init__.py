"""shindan: diagnostic-support AI for medical images."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shindan")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

from shindan.errors import ShindanError

__all__ = ["ShindanError", "__version__"]
