"""drctl: disaster-recovery runbooks, compiled to reviewable plans and executed with a journal."""

__version__ = "0.1.0"

__all__ = ["__version__"]
