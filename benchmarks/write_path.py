"""Write-path and start-up helpers, now in harness.py; kept for the benchmarks that import them here."""

from harness import command_prefix, replay_cost, startup_seconds

__all__ = ["command_prefix", "replay_cost", "startup_seconds"]
