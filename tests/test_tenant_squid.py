"""Tenant restrictions end to end (issue 10, acceptance 2): curl → Squid ssl-bump → Clearance → HTTPS origin.

A real Squid decrypts every tunnel (`ssl_bump bump all`, the README's snippet) and sends the inner requests to a
real `clearance serve` (REQMOD) with the shipped service catalogue and Google and Microsoft tenants configured.
The vendors' host names resolve (Squid's `hosts_file`) to a local HTTPS origin, whose certificate Squid trusts
(`tls_outgoing_options cafile=`), and which records every header line it receives, repeats and case kept. So what
the origin sees is what the vendor would see: the header Clearance put in, and nothing the client forged.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import serving
from tests.support.icap_client import wait_until_synced
from tests.support.origin import OriginServer, RecordedRequest
from tests.support.requirements import require_program
from tests.support.squid import CurlResult, SquidProxy
from tests.support.waiting import wait_until
from tests.test_ssl_bump import CERTGEN, make_ca, require_ssl_squid

pytestmark = pytest.mark.squid

DIRECTORY = "72f988bf-86f1-41af-91ab-2d7cd011db47"
POLICY_ID = "0d2b8e1c-8a5f-4c3e-9b7a-1f2e3d4c5b6a"
GOOGLE_DOMAINS = "example.gov.hk,dept.example.gov.hk"
MICROSOFT_TENANTS = f"contoso.onmicrosoft.com,{DIRECTORY}"
GOOGLE_HEADER = "X-GoogApps-Allowed-Domains"
MICROSOFT_HEADERS = ("Restrict-Access-To-Tenants", "Restrict-Access-Context", "sec-Restrict-Tenant-Access-Policy")
TENANT_HEADERS = (GOOGLE_HEADER, *MICROSOFT_HEADERS)
# mail.google.com is the shipped `gmail` service (webmail, tenant google); accounts.google.com is no service's
# host but under google.com; the look-alike is outside every vendor's hosts.
HOSTS = [
    "mail.google.com",
    "accounts.google.com",
    "login.microsoftonline.com",
    "login.live.com",
    "www.example.org",
    "mail.google.com.example.org",
]
CONFIG = f"""\
organisation:
  name_en: Test Department
  name_zh: 測試部門
policy:
  load_default_lists: true
approvals:
  require_department_head: false
  min_justification_chars: 0
logging:
  format: json
tenant_restrictions:
  google:
    domains: [example.gov.hk, dept.example.gov.hk]
  microsoft:
    tenants: [contoso.onmicrosoft.com, {DIRECTORY}]
    directory_id: {DIRECTORY}
    policy_id: {POLICY_ID}
    restrict_msa: true
"""


def make_origin_certificate(ca: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """A server certificate for every test host, signed by the test CA at `ca` (which Squid is told to trust)."""
    openssl = require_program("openssl")
    key, csr, cert, ext = (ca / name for name in ("origin.key", "origin.csr", "origin.pem", "origin.ext"))
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=" + ",".join(f"DNS:{host}" for host in hosts) + "\n",
        encoding="ascii",
    )
    subprocess.run(
        [
            openssl,
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={hosts[0]}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca / "ca.pem"),
            "-CAkey",
            str(ca / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def values(request: RecordedRequest, name: str) -> list[str]:
    """Every value of header `name` (any case) the origin received, in order: a repeat shows as two."""
    return [value for field, value in request.header_lines if field.lower() == name.lower()]


def tenant_fields(request: RecordedRequest) -> list[tuple[str, str]]:
    wanted = {name.lower() for name in TENANT_HEADERS}
    return [(field, value) for field, value in request.header_lines if field.lower() in wanted]


@dataclass
class Stack:
    redis_url: str
    env: dict[str, str]
    serve_log: Path
    icap_port: int
    origin: OriginServer
    squid: SquidProxy
    ca: Path  # the bump CA curl trusts

    def cli(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "icap_server", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"clearance {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
        wait_until_synced(self.icap_port, self.redis_url)
        return proc.stdout

    def fetch(
        self,
        host: str,
        user: str,
        *,
        path: str = "/",
        headers: Sequence[str] = (),
        method: str = "GET",
        data: bytes | None = None,
    ) -> RecordedRequest:
        """The request as the origin received it, through Squid's bumped tunnel; fails unless it got there."""
        path = f"{path}{'&' if '?' in path else '?'}t={uuid.uuid4().hex}"  # which recorded request is ours
        extra = ["--cacert", str(self.ca / "ca.pem")]
        for header in headers:
            extra += ["-H", header]
        result = self.squid.curl(
            f"https://{host}:{self.origin.port}{path}", user=user, method=method, data=data, extra=extra
        )
        self.check_passed(result, host, path)
        return self.origin.wait_for(lambda r: r.path == path, timeout=5)

    def check_passed(self, result: CurlResult, host: str, path: str) -> None:
        assert result.connect_status == 200, (result, self.diagnostics())
        assert result.status == 200, (result, self.diagnostics())
        assert result.text.startswith(f"origin-ok {host}:{self.origin.port} {path}"), result.text

    def records(self, user: str, host: str, count: int = 1) -> list[dict[str, Any]]:
        """The server's access-log lines for this user and host: at least `count` (they are written in batches)."""

        def found() -> list[dict[str, Any]] | None:
            lines = [json.loads(line) for line in self.serve_log.read_text("utf-8").splitlines() if line[:1] == "{"]
            mine = [r for r in lines if r.get("event") == "icap" and r.get("user") == user and r.get("host") == host]
            return mine if len(mine) >= count else None

        return wait_until(found, timeout=5, interval=0.05, what=f"{count} icap line(s) for {user} on {host}")

    def diagnostics(self) -> str:
        return (
            f"--- serve.log\n{self.serve_log.read_text(encoding='utf-8')[-2000:]}\n"
            f"--- squid cache.log\n{self.squid.cache_log_text()[-2000:]}"
        )


def bump_config(ca: Path, certs: Path, origin_ca: Path) -> tuple[list[str], str]:
    """The README's ssl-bump lines, plus the origin's CA for Squid's own TLS connections to the 'vendors'."""
    lines = [
        "acl CONNECT method CONNECT",
        f"sslcrtd_program {CERTGEN} -s {certs} -M 4MB",
        "sslcrtd_children 2",
        "ssl_bump bump all",
        f"tls_outgoing_options cafile={origin_ca}",
    ]
    options = (
        f"ssl-bump tls-cert={ca / 'ca.pem'} tls-key={ca / 'ca.key'} "
        "generate-host-certificates=on dynamic_cert_mem_cache_size=4MB"
    )
    return lines, options


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_ssl_squid()
    require_program("curl")
    base = tmp_path_factory.mktemp("tenant-squid")
    config = base / "clearance.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    ca = make_ca(base / "ca")
    origin_ca = make_ca(base / "origin-ca")
    origin_cert, origin_key = make_origin_certificate(origin_ca, HOSTS)
    certs = base / "squid" / "ssl_db"
    certs.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(CERTGEN), "-c", "-s", str(certs), "-M", "4MB"], check=True, capture_output=True)
    subprocess.run(["chown", "-R", "proxy:proxy", str(certs), str(ca), str(origin_ca)], check=False)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(origin_cert, origin_key)
    extra, options = bump_config(ca, certs, origin_ca / "ca.pem")
    with (
        serving(base, config, CONFIG) as served,
        OriginServer(tls=tls) as origin,
        SquidProxy(
            served.port,
            HOSTS,
            base / "squid",
            extra_config=extra,
            http_port_options=options,
            adaptation_rules=("deny CONNECT", "allow all"),  # judge the requests inside the tunnel
        ) as squid,
    ):
        yield Stack(served.redis_url, served.env, served.log, served.port, origin, squid, ca)


def test_google_host_arrives_with_exactly_one_allowed_domains_header_and_no_client_copy(stack: Stack) -> None:
    plain = stack.fetch("mail.google.com", "alice", path="/mail/u/0/")
    assert values(plain, GOOGLE_HEADER) == [GOOGLE_DOMAINS]
    assert tenant_fields(plain) == [(GOOGLE_HEADER, GOOGLE_DOMAINS)]  # and no Microsoft header on a Google host
    forged = stack.fetch(
        "mail.google.com",
        "alice",
        path="/mail/u/0/",
        headers=[f"{GOOGLE_HEADER}: gmail.com", "x-googapps-allowed-domains: personal.example", "X-Keep: me"],
    )
    assert values(forged, GOOGLE_HEADER) == [GOOGLE_DOMAINS]  # both of the client's copies gone, whatever the case
    assert values(forged, "X-Keep") == ["me"]  # the rest of the client's request is as it was sent
    # mail.google.com is the gmail service (webmail): alice has no approval, so it passes only because Clearance
    # answered with the modified request, not a 204.
    records = stack.records("alice", "mail.google.com", count=2)
    assert [(r["status"], r["reason"], r["tenant"], r["catalogue_service"]) for r in records] == [
        (200, "tenant-restricted", "google", "gmail")
    ] * 2


def test_microsoft_sign_in_hosts_arrive_with_the_microsoft_headers(stack: Stack) -> None:
    entra = stack.fetch(
        "login.microsoftonline.com",
        "mia",
        path="/common/oauth2/v2.0/authorize",
        headers=["Restrict-Access-To-Tenants: evil.onmicrosoft.com", "restrict-access-context: x"],
    )
    assert tenant_fields(entra) == [
        ("Restrict-Access-To-Tenants", MICROSOFT_TENANTS),
        ("Restrict-Access-Context", DIRECTORY),
        ("sec-Restrict-Tenant-Access-Policy", f"{DIRECTORY}:{POLICY_ID}"),
    ]
    personal = stack.fetch(
        "login.live.com", "mia", path="/login.srf", headers=["sec-Restrict-Tenant-Access-Policy: none"]
    )
    assert tenant_fields(personal) == [("sec-Restrict-Tenant-Access-Policy", "restrict-msa")]
    assert [record["tenant"] for record in stack.records("mia", "login.microsoftonline.com")] == ["microsoft"]


def test_a_user_approved_for_gmail_arrives_without_the_google_header(stack: Stack) -> None:
    approval = stack.cli(
        "approvals",
        "grant",
        "--user",
        "bob",
        "--service",
        "gmail",
        "--days",
        "7",
        "--approver",
        "head",
        "--reason",
        "personal Gmail for the overseas liaison",
    ).strip()
    assert approval and "\n" not in approval
    approved = stack.fetch("mail.google.com", "bob", path="/mail/u/0/")
    assert tenant_fields(approved) == []
    signin = stack.fetch("accounts.google.com", "bob", path="/ServiceLogin")  # Google sign-in: no service's host
    assert tenant_fields(signin) == []
    # Under the same policy version, someone without the approval still gets the header, and bob's gmail
    # approval does not lift Microsoft's restriction.
    assert values(stack.fetch("mail.google.com", "carol", path="/mail/u/0/"), GOOGLE_HEADER) == [GOOGLE_DOMAINS]
    assert values(stack.fetch("accounts.google.com", "carol"), GOOGLE_HEADER) == [GOOGLE_DOMAINS]
    microsoft = stack.fetch("login.microsoftonline.com", "bob")
    assert [name for name, _ in tenant_fields(microsoft)] == list(MICROSOFT_HEADERS)
    records = stack.records("bob", "mail.google.com")
    assert [(r["status"], r["reason"], r["tenant"], r["approval_id"]) for r in records] == [
        (204, "approved", None, approval)
    ]


def test_hosts_outside_the_vendors_lists_arrive_untouched(stack: Stack) -> None:
    # Two copies of the Google header reach the origin as two: so "exactly one" above is a real count.
    sent = [
        f"{GOOGLE_HEADER}: mine.example",
        "x-googapps-allowed-domains: also.example",
        f"Restrict-Access-To-Tenants: {DIRECTORY}",
        "X-Keep: me",
    ]
    for host in ("www.example.org", "mail.google.com.example.org"):
        request = stack.fetch(host, "dave", headers=sent)
        assert tenant_fields(request) == [
            (GOOGLE_HEADER, "mine.example"),
            ("x-googapps-allowed-domains", "also.example"),
            ("Restrict-Access-To-Tenants", DIRECTORY),
        ]
        assert values(request, "X-Keep") == ["me"]
        assert [(r["status"], r["tenant"]) for r in stack.records("dave", host)] == [(204, None)]


def sign_in_form(size: int) -> bytes:
    """An urlencoded sign-in post of about `size` bytes (a big opaque context field, as vendors' forms have)."""
    context = secrets.token_urlsafe(size)[:size]
    return f"login=alice%40example.gov.hk&passwd=s3cr%26t&ctx={context}&flowToken=ab%3D%3D".encode("ascii")


def test_a_sign_in_post_arrives_with_its_body_intact_and_the_header(stack: Stack) -> None:
    for host, user, size in (("login.microsoftonline.com", "erin", 6000), ("accounts.google.com", "erin", 3000)):
        form = sign_in_form(size)
        assert len(form) > stack.squid.preview_size  # the body is streamed after a 100 Continue, not previewed
        request = stack.fetch(
            host,
            user,
            path="/common/login",
            method="POST",
            data=form,
            headers=["Content-Type: application/x-www-form-urlencoded"],
        )
        assert request.method == "POST"
        assert request.body == form
        assert values(request, "Content-Type") == ["application/x-www-form-urlencoded"]
        if host == "accounts.google.com":
            assert tenant_fields(request) == [(GOOGLE_HEADER, GOOGLE_DOMAINS)]
        else:
            assert [value for _, value in tenant_fields(request)] == [
                MICROSOFT_TENANTS,
                DIRECTORY,
                f"{DIRECTORY}:{POLICY_ID}",
            ]
