"""The wiring: builders that make each component from its own config section (build.py) and the daemon that
starts and stops them (daemon.py). Nothing below imports this package."""
from .daemon import Pipeline

__all__ = ["Pipeline"]
