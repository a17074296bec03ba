"""Readers of outside files: third-party category lists (UT1/squidGuard, CSV, host lists) and approval files."""
