"""Targets: functions that aggregate a job's simulation results."""
