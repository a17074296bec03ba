"""A live Clearance for the robustness benches (fuzz.py, soak.py): its Redis, its RSS, and reading its answers.

`LiveServer` starts a redis-server on a free port (never 6379) and loads one webmail list with the CLI, as the
peer table does (bench/peers.py), then runs `clearance serve` in a process group of its own; `stop` ends both.
`read_answer` frames one ICAP response from an asyncio stream leniently, so that the strict grammar reader
(tests/support/icap_grammar.py) judges it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from measure import process_tree
from peers import REPO, Clearance, Context, free_port, project_env, stop_process, wait_for_port

sys.path.insert(0, str(REPO))  # tests.support.icap_grammar: the independent reader of responses

BLOCKED_HOSTS = ("mail.google.com", "outlook.live.com", "mail.yahoo.com", "203.0.113.7")
ALLOWED_HOSTS = ("www.example.com", "intranet.example.org", "198.51.100.20")


@dataclass
class LiveServer:
    """One `clearance serve` with its own Redis, in a work directory."""

    workdir: Path
    workers: int = 1
    settings: str = ""  # extra YAML lines for the config file (`server: {...}`)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    peer: Clearance = field(default_factory=Clearance)

    def start(self) -> None:
        """Redis and the list as `make bench` sets Clearance up (bench/peers.py), then this config and serve."""
        hosts = self.workdir / "webmail.txt"
        hosts.write_text("".join(f"{host}\n" for host in BLOCKED_HOSTS), encoding="utf-8")
        self.port = free_port()
        serve = self.peer.command(Context(self.workdir, hosts, connections=0), self.port)
        (self.workdir / "clearance.yaml").write_text(
            "policy: {load_default_lists: false}\nlogging: {format: json, level: error}\n" + self.settings,
            encoding="utf-8",
        )
        if "--workers" in serve:
            serve[serve.index("--workers") + 1] = str(self.workers)
        with open(self.workdir / "serve.log", "wb") as log:
            self.process = subprocess.Popen(
                serve, cwd=self.workdir, env=project_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port, self.process, "clearance serve")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.peer.teardown()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """The serve process and its workers (Redis is not counted)."""
        return process_tree([self.process.pid]) if self.process is not None else []

    def rss_mib(self) -> float:
        """Resident memory of the serve process tree, in MiB."""
        return sum(rss_kib(pid) for pid in self.pids()) / 1024

    def log_tail(self, lines: int = 5) -> str:
        text = (self.workdir / "serve.log").read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def tracebacks(self) -> int:
        text = (self.workdir / "serve.log").read_text(encoding="utf-8", errors="replace")
        return text.count("Traceback")


def rss_kib(pid: int | str = "self") -> int:
    """A process's resident memory in KiB, from /proc (0 once it is gone); this process's by default."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Truncated(Exception):
    """The peer closed the connection in the middle of a response."""


async def _fill(reader: asyncio.StreamReader, buffer: bytearray) -> None:
    data = await reader.read(65536)
    if not data:
        raise Truncated(bytes(buffer[:200]).decode("latin-1"))
    buffer.extend(data)


async def read_answer(reader: asyncio.StreamReader, buffer: bytearray) -> bytes | None:
    """One response's bytes (head, encapsulated sections, chunked body), or None at a clean EOF before any.

    Framed leniently: the Encapsulated header says where the body starts; a chunked body runs to its zero
    chunk and blank line. Whatever is wrong inside is for the grammar reader to say.
    """
    while b"\r\n\r\n" not in buffer:
        if not buffer and reader.at_eof():
            return None
        try:
            await _fill(reader, buffer)
        except Truncated:
            if not buffer:
                return None
            raise
    head_end = buffer.index(b"\r\n\r\n") + 4
    body_name, end = "null-body", head_end
    for line in bytes(buffer[:head_end]).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"encapsulated" and b"=" in value:
            body_name, _, offset = value.decode("latin-1").split(",")[-1].strip().partition("=")
            end = head_end + int(offset) if offset.isdigit() else head_end
    while len(buffer) < end:
        await _fill(reader, buffer)
    if body_name not in ("null-body", ""):
        end = await _chunked_end(reader, buffer, end)
    answer = bytes(buffer[:end])
    del buffer[:end]
    return answer


async def _chunked_end(reader: asyncio.StreamReader, buffer: bytearray, pos: int) -> int:
    """The offset just past a chunked body that starts at pos (trailers included)."""
    while True:
        while b"\r\n" not in buffer[pos:]:
            await _fill(reader, buffer)
        line_end = buffer.index(b"\r\n", pos)
        size_text = bytes(buffer[pos:line_end]).split(b";")[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return line_end + 2  # malformed: let the grammar reader say so
        pos = line_end + 2
        if size == 0:
            break
        while len(buffer) < pos + size + 2:
            await _fill(reader, buffer)
        pos += size + 2
    while True:
        while b"\r\n" not in buffer[pos:]:
            await _fill(reader, buffer)
        line_end = buffer.index(b"\r\n", pos)
        if line_end == pos:
            return pos + 2
        pos = line_end + 2
