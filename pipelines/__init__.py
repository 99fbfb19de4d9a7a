"""Dagster definitions, resources, jobs, schedules and the ``hrm-trading`` CLI."""
