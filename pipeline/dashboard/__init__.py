"""The monitoring dashboard: pages, JSON API, health checks and /metrics, served by the daemon."""
from .app import create_app

__all__ = ["create_app"]
