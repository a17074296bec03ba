"""Clearance: an ICAP REQMOD web-content filter that gates restricted categories behind approvals."""

__version__ = "0.1.0"
