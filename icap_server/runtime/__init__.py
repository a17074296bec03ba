"""The process shell: the asyncio server, `serve`, the worker supervisor, logging setup, embedded Redis."""
