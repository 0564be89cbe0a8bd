"""What both APIs take alike, URLs and keys, is checked at construction.

A URL with a bad port, no host, a control character or credentials, and a key with a
control character or beyond ASCII (which would fail on the wire, or be sent as bytes that
can never match) fail before anything is sent. Each error names the parameter, and none
echoes a key, a header value or a URL's password.
"""

from __future__ import annotations

import pytest

from genai_coroutines import DocumentConfig, DocumentProcessor
from genai_coroutines.emulator import Emulator
from tests.documents_support import config
from tests.responses_support import request, run


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://api.example.com:99999/v1", "port"),
        ("https://api.example.com:0/v1", "port"),
        ("https://api.example.com:http/v1", "port"),
        ("http://", "host"),
        ("http://:8080/v1", "host"),
        ("https://api.example.com/v1\r\nX-Injected: 1", "control character"),
        ("https://api.example .com/v1", "space"),
    ],
)
def test_a_url_with_a_bad_port_or_no_host_is_refused_for_every_url_parameter(
    url: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=f"base_url.*{problem}"):
        request(base_url=url)
    with pytest.raises(ValueError, match=f"api_url.*{problem}"):
        config(api_url=url)
    with pytest.raises(ValueError, match=f"webhook_url.*{problem}"):
        config(webhook_url=url)


@pytest.mark.parametrize(
    "url", ["https://user:hunter2@api.example.com/v1", "https://hunter2@api.example.com/v1"]
)
def test_a_url_with_credentials_is_refused_without_showing_them(url: str) -> None:
    for name, build in (
        ("base_url", lambda: request(base_url=url)),
        ("api_url", lambda: config(api_url=url)),
        ("webhook_url", lambda: config(webhook_url=url)),
    ):
        with pytest.raises(ValueError, match=f"{name} must not contain credentials") as caught:
            build()
        assert "hunter2" not in str(caught.value)


def test_good_urls_still_pass() -> None:
    request(base_url="http://127.0.0.1:8765/v1")
    request(base_url="http://[::1]:8765/v1")
    config(api_url="https://www.datalab.to/api/v1/marker", webhook_url="https://example.com/hook")


@pytest.mark.parametrize(
    "bad", ["sk-abc\ndef", "sk-abc\rdef", "sk-\x00abc", "sk-abc\x7f", "sk-\ud800", "sk-abc def"]
)
def test_a_control_character_inside_the_key_is_refused_without_showing_the_key(bad: str) -> None:
    for build in (lambda: request(api_key=bad), lambda: config(api_key=bad)):
        with pytest.raises(ValueError, match="api_key contains") as caught:
            build()
        assert "sk-abc" not in str(caught.value) and "def" not in str(caught.value)


@pytest.mark.parametrize("secret", ["sk-clé-0123456789", "sk-ключ-0123456789", "sk-\xa00123456789"])
async def test_a_key_or_header_value_beyond_ascii_is_refused_before_sending(
    emulator: Emulator, secret: str
) -> None:
    """aiohttp would send either as UTF-8 bytes: a key that can never match, a header the
    server reads otherwise. Refused at construction, naming the parameter, not echoing it."""
    builds = [
        ("api_key", lambda: run(emulator, ["hi"], api_key=secret)),
        (
            r"extra_headers\['X-Token'\]",
            lambda: run(emulator, ["hi"], extra_headers={"X-Token": secret}),
        ),
        (  # Datalab: the key goes in X-Api-Key
            "api_key",
            lambda: DocumentProcessor(
                DocumentConfig(api_key=secret, api_url=emulator.marker_url)
            ).process([b"%PDF-1.4"]),
        ),
    ]
    for name, build in builds:
        with pytest.raises(ValueError, match=name) as caught:
            await build()
        assert "0123456789" not in str(caught.value)
    assert not emulator.stats.received
