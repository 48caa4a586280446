"""The internet as the two sides of a tunnel see it, for tests: a test CA, and tests/standins/edge_proxy
(Cloudflare's edge for *.trycloudflare.com behind HTTPS_PROXY), fed by the stand-in cloudflared."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import wait_until

STANDINS = Path(__file__).parent / "standins"
CLOUDFLARED = STANDINS / "cloudflared"
EDGE_PROXY = STANDINS / "edge_proxy"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_test_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for *.trycloudflare.com signed by it: (ca.pem, edge.pem, edge.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=mfcolab test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    openssl("req", *ec, "-keyout", "edge.key", "-out", "edge.csr", "-subj", "/CN=*.trycloudflare.com", cwd=folder)
    (folder / "edge.ext").write_text(
        "subjectAltName=DNS:*.trycloudflare.com,DNS:trycloudflare.com\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    openssl("x509", "-req", "-in", "edge.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "edge.pem", "-days", "2", "-extfile", "edge.ext", cwd=folder)
    return folder / "ca.pem", folder / "edge.pem", folder / "edge.key"


@dataclass
class Internet:
    proxy_url: str
    ca_file: Path
    hosts: Path  # the stand-in cloudflared's STANDIN_EDGE_DIR
    process: subprocess.Popen[bytes]

    def client_env(self) -> dict[str, str]:
        """What any machine on this "internet" carries: the proxy and the CA it trusts."""
        local = "127.0.0.1,localhost"
        return {"HTTPS_PROXY": self.proxy_url, "https_proxy": self.proxy_url, "NO_PROXY": local, "no_proxy": local,
                "REQUESTS_CA_BUNDLE": str(self.ca_file), "SSL_CERT_FILE": str(self.ca_file)}

    def cpu_env(self) -> dict[str, str]:
        """The CPU side: a client too (the tunnel checks /healthz through its URL), plus the stand-in's wiring."""
        return {**self.client_env(), "STANDIN_EDGE_DIR": str(self.hosts)}


def start_internet(folder: Path) -> Internet:
    ca, cert, key = make_test_ca(folder / "tls")
    hosts = folder / "hosts"
    hosts.mkdir(parents=True, exist_ok=True)
    port_file = folder / "proxy.port"
    log = open(folder / "edge_proxy.log", "ab")
    process = subprocess.Popen([sys.executable, str(EDGE_PROXY), "--hosts", str(hosts), "--cert", str(cert),
                                "--key", str(key), "--port-file", str(port_file)],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    wait_until(lambda: port_file.exists() or process.poll() is not None, timeout=30, what="the edge proxy to listen")
    assert process.poll() is None, (folder / "edge_proxy.log").read_text()
    return Internet(f"http://127.0.0.1:{port_file.read_text().strip()}", ca, hosts, process)


def stop_internet(internet: Internet) -> None:
    if internet.process.poll() is None:
        os.kill(internet.process.pid, signal.SIGTERM)
        try:
            internet.process.wait(10)
        except subprocess.TimeoutExpired:
            internet.process.kill()
            internet.process.wait(5)


@pytest.fixture(scope="module")
def internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Internet]:
    net = start_internet(tmp_path_factory.mktemp("internet"))
    yield net
    stop_internet(net)
