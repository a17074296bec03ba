"""The approval lifecycle through the real CLI, Redis and server, under the approval rules as shipped."""
