"""The `clearance` admin command: the entry point and one module per command group."""
