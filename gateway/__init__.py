"""An authentication gateway in front of unchanged HTTP backends."""

__version__ = "0.1.0"
