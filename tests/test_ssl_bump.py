"""HTTPS: with Squid's ssl-bump the block page reaches the browser inside the TLS connection.

Without TLS interception a CONNECT can only be refused (403, the browser shows its own error). This test runs
the squid.conf snippet the README gives: Squid decrypts, the inner GET goes through Clearance like any other,
and the client (trusting the organisation's CA) receives the bilingual block page over HTTPS.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, StartServer
from tests.support.icap_client import wait_until_synced
from tests.support.requirements import require_program, unavailable
from tests.support.squid import SquidProxy

pytestmark = pytest.mark.squid

CERTGEN = Path("/usr/lib/squid/security_file_certgen")


def require_ssl_squid() -> str:
    squid = require_program("squid")
    version = subprocess.run([squid, "-v"], capture_output=True, text=True).stdout
    if "--with-openssl" not in version or not CERTGEN.exists():
        unavailable("this Squid has no TLS interception: install squid-openssl (make test does, as root)")
    return squid


def make_ca(directory: Path) -> Path:
    openssl = require_program("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Clearance Test CA",
         "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.pem"),
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        check=True, capture_output=True,
    )
    return directory


def test_https_request_to_a_restricted_site_gets_the_block_page_through_ssl_bump(
    start_icap_server: StartServer, cli: CLI, redis_url: str, tmp_path: Path
) -> None:
    require_ssl_squid()
    server = start_icap_server()
    cli("categories", "add", "webmail", "mail.personal-mail.example")
    wait_until_synced(server.port, redis_url)
    ca = make_ca(tmp_path / "ca")
    certs = tmp_path / "squid" / "ssl_db"
    certs.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(CERTGEN), "-c", "-s", str(certs), "-M", "4MB"], check=True, capture_output=True)
    if shutil.which("chown"):
        subprocess.run(["chown", "-R", "proxy:proxy", str(certs), str(ca)], check=False)
    bump = [
        "acl CONNECT method CONNECT",
        f"sslcrtd_program {CERTGEN} -s {certs} -M 4MB",
        "sslcrtd_children 2",
        # Bump at the first step (client-first): Clearance judges the decrypted request before Squid contacts
        # the site, so a blocked request never reaches it. Production setups often `peek` first to splice
        # banking and health sites untouched; see the README.
        "ssl_bump bump all",
    ]
    options = (
        f"ssl-bump tls-cert={ca / 'ca.pem'} tls-key={ca / 'ca.key'} "
        "generate-host-certificates=on dynamic_cert_mem_cache_size=4MB"
    )
    with SquidProxy(
        server.port,
        ["mail.personal-mail.example"],
        tmp_path / "squid",
        extra_config=bump,
        http_port_options=options,
        # The tunnel is decrypted, so judge the requests inside it, not the CONNECT itself.
        adaptation_rules=("deny CONNECT", "allow all"),
    ) as squid:
        result = squid.curl("https://mail.personal-mail.example/inbox", extra=["--cacert", str(ca / "ca.pem")])
    assert result.connect_status == 200  # Squid accepted the tunnel and decrypted it
    assert result.status == 403, (result, squid.cache_log_text()[-2000:])
    page = result.body.decode("utf-8")
    assert "Access to this site is blocked" in page and "此網站已被封鎖" in page
    assert "mail.personal-mail.example" in page.replace("<wbr>", "")  # long values may wrap after a dot
