"""atrepo: the AT Protocol repository and synchronization system, in Python."""

__version__ = "0.1.0"
