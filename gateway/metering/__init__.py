"""Metering: limits and their counters, usage, the wallet."""
