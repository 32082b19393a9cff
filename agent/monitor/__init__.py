"""Monitor: Prometheus metrics (latency, errors, feature quality, bundle state) and drift of
each model's inputs and outputs against its bundle's training reference."""

from agent.monitor.config import MonitorConfig
from agent.monitor.monitor import Monitor

__all__ = ["Monitor", "MonitorConfig"]
