"""The monitor endpoint of the long-running loop: health, Prometheus metrics, positions, kill switch."""

from .server import (DEFAULT_PORT, MonitorError, MonitorServer, health, is_loopback, metrics_text,  # noqa: F401
                     start_monitor)

__all__ = ["DEFAULT_PORT", "MonitorError", "MonitorServer", "health", "is_loopback", "metrics_text", "start_monitor"]
