"""Security settings, key files, the token bucket and the development CA."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from pydantic import ValidationError
from security_helpers import GOOD_KEY, OTHER_KEY, Pki

from services.analytics.__main__ import main as analytics_main
from services.analytics.settings import Settings
from services.common.auth import ApiKeys, bearer_token, read_key_file
from services.common.devcerts import write_dev_pki
from services.common.ratelimit import RateLimiter
from services.common.settings import settings_from_args
from services.encoder.cli import build_parser
from services.encoder.cli import main as encoder_main
from services.encoder.cli import settings_from_args as encoder_settings_from_args
from services.encoder.settings import EncoderSettings


def test_security_is_off_and_limits_are_on_by_default() -> None:
    for settings in (Settings(), EncoderSettings()):
        assert settings.tls_cert_file is None and settings.api_keys == []
        assert settings.api_keys_file is None
        assert settings.rate_limit_per_s > 0 and settings.rate_limit_burst >= 1
    assert Settings().cors_origins == [] and not Settings().metrics_require_auth
    assert Settings().max_upload_bytes == 32 * 2**20
    assert EncoderSettings().client_tls_config() is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"tls_cert_file": "/c.pem"},
        {"tls_key_file": "/k.pem"},
        {"tls_client_ca_file": "/ca.pem"},
        {"api_keys": ["short"]},
        {"api_keys": ["has a space in the key"]},
        {"rate_limit_per_s": -1},
        {"rate_limit_burst": 0},
    ],
)
def test_invalid_security_settings_are_refused(overrides: dict[str, object]) -> None:
    for cls in (Settings, EncoderSettings):
        with pytest.raises(ValidationError):
            cls(**overrides)  # type: ignore[arg-type]


def test_keys_never_show_in_reprs_errors_or_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSTIC_ANALYTICS_API_KEYS", f'["{GOOD_KEY}"]')
    settings = Settings()
    assert GOOD_KEY not in repr(settings) and GOOD_KEY not in str(settings.model_dump())
    assert ApiKeys.from_settings(settings).identify(GOOD_KEY) is not None
    # Command lines are visible to every local user: secrets have no flags.
    with pytest.raises(SystemExit):
        settings_from_args(Settings, ["--api-keys", GOOD_KEY])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stream", "--client-api-key", GOOD_KEY])


def test_a_refused_key_is_not_echoed_in_the_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRANSTIC_ENCODER_CLIENT_API_KEY", "tiny-secret")
    assert encoder_main(["stream"]) == 2
    err = capsys.readouterr().err
    assert "client_api_key" in err and "tiny-secret" not in err
    monkeypatch.setenv("TRANSTIC_ANALYTICS_API_KEYS", '["tiny-secret"]')
    with pytest.raises(SystemExit) as info:
        analytics_main([])
    assert "api_keys" in str(info.value.code) and "tiny-secret" not in str(info.value.code)


def test_api_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# ops team\n{GOOD_KEY}\n\n  {OTHER_KEY}  \n")
    assert read_key_file(path) == [GOOD_KEY, OTHER_KEY]
    keys = ApiKeys.from_settings(Settings(api_keys_file=path))
    assert len(keys) == 2 and keys.identify(OTHER_KEY) is not None
    assert keys.identify(GOOD_KEY) != keys.identify(OTHER_KEY)
    assert GOOD_KEY not in str(keys.identify(GOOD_KEY))
    path.write_text("# nothing but comments\n")
    with pytest.raises(ValueError, match="no keys"):
        ApiKeys.from_settings(Settings(api_keys_file=path))  # would silently disable auth
    path.write_text("short\n")
    with pytest.raises(ValueError, match="line 1"):
        read_key_file(path)
    with pytest.raises(OSError, match="missing"):
        read_key_file(tmp_path / "missing")


def test_bearer_parsing() -> None:
    assert bearer_token(f"Bearer {GOOD_KEY}") == GOOD_KEY
    assert bearer_token(f"bearer {GOOD_KEY}") == GOOD_KEY
    assert bearer_token(f"Basic {GOOD_KEY}") is None
    assert bearer_token("Bearer") is None and bearer_token(None) is None


def test_encoder_client_settings(pki: Pki, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"{GOOD_KEY}\n")
    args = build_parser().parse_args(
        [
            "stream",
            "--client-ca-file", str(pki.ca),
            "--client-cert-file", str(pki.client_cert),
            "--client-key-file", str(pki.client_key),
            "--client-api-key-file", str(key_file),
            "--client-server-name", "analytics",
        ]
    )  # fmt: skip
    settings = encoder_settings_from_args(args)
    tls = settings.client_tls_config()
    assert tls is not None and tls.cert_file == pki.client_cert
    assert tls.options() == [("grpc.ssl_target_name_override", "analytics")]
    assert settings.client_key() == GOOD_KEY
    assert EncoderSettings(client_tls=True).client_tls_config() is not None
    with pytest.raises(ValidationError):
        EncoderSettings(client_cert_file=pki.client_cert)
    serve = build_parser().parse_args(["serve", "--tls-cert-file", "/c", "--tls-key-file", "/k"])
    assert encoder_settings_from_args(serve).tls_key_file == Path("/k")


def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2, burst=3, max_clients=2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0  # per client
    now[0] = 1.0  # two tokens back
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    assert limiter.acquire("a") > 0
    now[0] = 100.0  # never more than the burst
    assert [limiter.acquire("a") == 0 for _ in range(4)] == [True, True, True, False]
    limiter.acquire("c")
    assert len(limiter) == 2  # bounded memory: the least recently seen client is dropped


def test_dev_pki_files(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    written = write_dev_pki(out, hosts=["analytics", "10.0.0.7"], clients=["cam-1"])
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE(written["ca.key"].stat().st_mode) == 0o600
    assert stat.S_IMODE(written["server.key"].stat().st_mode) == 0o644
    cert = x509.load_pem_x509_certificate(written["server.crt"].read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["analytics"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.7"]
    # The server and client certificates verify against the CA (OpenSSL's view).
    context = ssl.create_default_context(cafile=str(written["ca.crt"]))
    context.load_cert_chain(written["cam-1.crt"], written["cam-1.key"])
    assert len(read_key_file(written["api-keys"])) == 1
