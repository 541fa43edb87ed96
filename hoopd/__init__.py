"""hoopd: an access gateway between people or agents and production systems."""

__version__ = "0.1.0"
