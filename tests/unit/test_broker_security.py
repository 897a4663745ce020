"""Broker security settings: STREAMS_BROKER_SSL_CAFILE is checked at start-up, decides TLS with the
security protocol, and reaches both the preflight's aiokafka options and Faust's credentials; a
TLS failure at start-up is explained as one (the real ones: tests/integration/test_security.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
from aiokafka.errors import KafkaConnectionError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams import config as streams_config
from streams.config import ConfigError, load_settings
from streams.topics import _connect_hint, broker_credentials, client_auth, ssl_context

# A self-signed certificate (keytool, EC P-256, no key kept): any well-formed PEM CA will do.
CA_PEM = """-----BEGIN CERTIFICATE-----
MIIBdDCCARqgAwIBAgIJAJm51gE5insMMAoGCCqGSM49BAMCMC0xKzApBgNVBAMT
ImxpdmUtY29tbWVyY2Utc3RyZWFtcyB1bml0IHRlc3QgQ0EwIBcNMjYxMTI2MTYx
MDQzWhgPMjEyNjExMDIxNjEwNDNaMC0xKzApBgNVBAMTImxpdmUtY29tbWVyY2Ut
c3RyZWFtcyB1bml0IHRlc3QgQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAS8
ROPS24uLVDMpMZ7uGDYjB6JPFLVSIfUc7RbP0h85vS9Axi9GrhxSgnywX2TxKo4F
FEOdYCKII3yb1962OIFsoyEwHzAdBgNVHQ4EFgQUM8vmbnv73GB6Ud4/fBH18Mtk
3o0wCgYIKoZIzj0EAwIDSAAwRQIgf+0QWQilB8wHvVZ7lCphfuIZmx4VnrhCEheH
K1cZJyUCIQCVj7uy4Jt3tRANAW0oloJf6sA6eYGPUWDufhr8+N+C1g==
-----END CERTIFICATE-----
"""
SASL = {
    "STREAMS_BROKER_SASL_MECHANISM": "SCRAM-SHA-256",
    "STREAMS_BROKER_SASL_USERNAME": "streams",
    "STREAMS_BROKER_SASL_PASSWORD": "s3cret-Pa55",
}


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text(CA_PEM)
    return path


def config_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    return str(err.value)


def test_no_ca_file_by_default() -> None:
    s = load_settings({})
    assert s.ssl_cafile is None and s.security_protocol == "PLAINTEXT"
    assert ssl_context(s) is None and "ssl_context" not in client_auth(s)
    assert broker_credentials(s) is None


@pytest.mark.parametrize(
    ("env", "protocol"),
    [
        ({}, "SSL"),  # a CA file alone means TLS
        ({"STREAMS_BROKER_SECURITY_PROTOCOL": "SSL"}, "SSL"),
        (SASL, "SASL_SSL"),  # with a mechanism: SCRAM over TLS
        ({**SASL, "STREAMS_BROKER_SECURITY_PROTOCOL": "sasl_ssl"}, "SASL_SSL"),
    ],
)
def test_ca_file_selects_tls(ca: Path, env: dict[str, str], protocol: str) -> None:
    s = load_settings({**env, "STREAMS_BROKER_SSL_CAFILE": str(ca)})
    assert s.ssl_cafile == ca
    assert s.security_protocol == protocol


def test_the_context_trusts_the_ca_file_and_checks_host_names(ca: Path) -> None:
    s = load_settings({**SASL, "STREAMS_BROKER_SSL_CAFILE": str(ca)})
    ctx = ssl_context(s)
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    # Only this certificate (get_ca_certs() lists CA:TRUE ones; keytool's self-signed has no
    # basic constraints, and OpenSSL still uses it as a trust anchor).
    assert ctx.cert_store_stats()["x509"] == 1


def test_preflight_options_and_faust_credentials_agree(ca: Path) -> None:
    """The start-up check (client_auth) and the worker's clients (Faust's credentials) connect
    the same way, for SSL alone and for SASL_SSL."""
    for env, cls in (({}, faust.SSLCredentials), (SASL, faust.SASLCredentials)):
        s = load_settings({**env, "STREAMS_BROKER_SSL_CAFILE": str(ca)})
        auth, creds = client_auth(s), broker_credentials(s)
        assert isinstance(creds, cls)
        faust_auth = credentials_to_aiokafka_auth(creds)
        assert faust_auth["security_protocol"] == auth["security_protocol"] == s.security_protocol
        for ctx in (faust_auth["ssl_context"], auth["ssl_context"]):
            assert isinstance(ctx, ssl.SSLContext) and ctx.cert_store_stats()["x509"] == 1
        for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
            assert faust_auth.get(key) == auth.get(key)


def test_sasl_ssl_without_a_ca_file_uses_the_system_cas() -> None:
    s = load_settings({**SASL, "STREAMS_BROKER_SECURITY_PROTOCOL": "SASL_SSL"})
    assert s.ssl_cafile is None
    ctx = ssl_context(s)
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED
    assert credentials_to_aiokafka_auth(broker_credentials(s))["security_protocol"] == "SASL_SSL"


def test_a_mechanism_keeps_tls_when_ssl_was_chosen() -> None:
    """SSL plus a mechanism means SCRAM over TLS, not a silent fallback to plaintext."""
    s = load_settings({**SASL, "STREAMS_BROKER_SECURITY_PROTOCOL": "SSL"})
    assert s.security_protocol == "SASL_SSL"
    assert load_settings(SASL).security_protocol == "SASL_PLAINTEXT"


def test_missing_ca_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    msg = config_error({"STREAMS_BROKER_SSL_CAFILE": str(missing)})
    assert msg.startswith("STREAMS_BROKER_SSL_CAFILE=")
    assert f"no such file: {missing}" in msg and "PEM" in msg


def test_a_directory_is_not_a_ca_file(tmp_path: Path) -> None:
    msg = config_error({"STREAMS_BROKER_SSL_CAFILE": str(tmp_path)})
    assert "STREAMS_BROKER_SSL_CAFILE" in msg and "no such file" in msg


@pytest.mark.parametrize(
    "content",
    ["", "not a certificate\n", "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"],
)
def test_a_file_without_a_certificate_is_refused(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text(content)
    msg = config_error({"STREAMS_BROKER_SSL_CAFILE": str(bad)})
    assert "STREAMS_BROKER_SSL_CAFILE" in msg and "no PEM certificate could be loaded" in msg


def test_an_unreadable_ca_file_is_refused(ca: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a mode-000 file gives a non-root loader (root reads any file, so CI, which runs as
    # root, would never see it from chmod alone).
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(streams_config.ssl, "create_default_context", denied)
    msg = config_error({"STREAMS_BROKER_SSL_CAFILE": str(ca)})
    assert "STREAMS_BROKER_SSL_CAFILE" in msg and "cannot read" in msg
    assert "Permission denied" in msg


@pytest.mark.parametrize(
    ("protocol", "fix"),
    [("PLAINTEXT", "set it to SSL"), ("SASL_PLAINTEXT", "set it to SASL_SSL")],
)
def test_ca_file_with_a_plaintext_protocol_is_a_contradiction(
    ca: Path, protocol: str, fix: str
) -> None:
    env = SASL if protocol.startswith("SASL") else {}
    msg = config_error(
        {**env, "STREAMS_BROKER_SECURITY_PROTOCOL": protocol, "STREAMS_BROKER_SSL_CAFILE": str(ca)}
    )
    assert f"STREAMS_BROKER_SECURITY_PROTOCOL={protocol} does not use TLS" in msg
    assert fix in msg and "STREAMS_BROKER_SSL_CAFILE" in msg


def test_repr_shows_the_ca_path_but_never_the_password(ca: Path) -> None:
    s = load_settings({**SASL, "STREAMS_BROKER_SSL_CAFILE": str(ca)})
    assert str(ca) in repr(s)
    assert SASL["STREAMS_BROKER_SASL_PASSWORD"] not in repr(s)
    assert SASL["STREAMS_BROKER_SASL_PASSWORD"] not in repr(broker_credentials(s))


def verify_error(message: str) -> ssl.SSLCertVerificationError:
    """What the TLS handshake raises (as seen against kafka.sh's self-signed certificate)."""
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_message = message
    return exc


def test_hint_for_an_untrusted_certificate_names_the_ca_setting(ca: Path) -> None:
    s = load_settings({**SASL, "STREAMS_BROKER_SSL_CAFILE": str(ca)})
    msg = _connect_hint(s, verify_error("self-signed certificate"))
    assert "does not trust (self-signed certificate" in msg
    assert f"STREAMS_BROKER_SSL_CAFILE={ca}" in msg and "cannot reach" not in msg
    system = load_settings({**SASL, "STREAMS_BROKER_SECURITY_PROTOCOL": "SASL_SSL"})
    assert "trusted: system CAs" in _connect_hint(system, verify_error("unable to get issuer"))


def test_hint_for_a_certificate_of_another_host_names_the_broker_setting(ca: Path) -> None:
    s = load_settings({"STREAMS_BROKER_SSL_CAFILE": str(ca)})
    msg = _connect_hint(s, verify_error("IP address mismatch, certificate is not valid for '::1'."))
    assert "for another host" in msg and "set STREAMS_BROKER to" in msg


@pytest.mark.parametrize(
    "exc", [ConnectionResetError(), KafkaConnectionError("Connection at 127.0.0.1:1 closed")]
)
def test_hint_for_a_hang_up_points_at_the_protocol(exc: BaseException) -> None:
    s = load_settings(SASL)
    msg = _connect_hint(s, exc)
    assert "closed the connection" in msg and "does its listener speak SASL_PLAINTEXT?" in msg
    assert "STREAMS_BROKER_SECURITY_PROTOCOL" in msg


def test_hint_for_an_unreachable_broker_is_unchanged() -> None:
    msg = _connect_hint(load_settings({}), ConnectionRefusedError(111, "Connect call failed"))
    assert msg.startswith("cannot reach Kafka at kafka://localhost:9092")
