"""msgwatch: an observatory for messenger blocking."""

from msgwatch import _native

__version__ = "0.1.0"

_native.install()  # the compiled analysis modules, or their sources (see msgwatch._native)
