"""Shim for tools that still call setup.py; all metadata lives in pyproject.toml.

The one thing pyproject.toml cannot say as plainly: the C quick scan (`icap_server/protocol/_speedups.c`) is
optional. Without a compiler the build goes on without it, and the pure-Python scan gives the same answers.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "icap_server.protocol._speedups",
            ["icap_server/protocol/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
