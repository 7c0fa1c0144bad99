"""msgwatch: an observatory for messenger blocking."""

__version__ = "0.1.0"
