"""envoi.log: Envoy's --log-format flags, component levels, and the connection/stream tags of
debug lines (checked end to end through an HTTP request)."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

import pytest
from envoi.log import EnvoyFormatter, LogSetupError, parse_component_levels
from envoi.testing import EnvoiProcess, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def record(msg: str, name: str = "envoi.upstream", level: int = logging.INFO) -> logging.LogRecord:
    r = logging.LogRecord(name, level, "/src/x.py", 42, msg, (), None, func="f")
    r.created, r.msecs = 1_700_000_000.25, 250.0
    return r


def test_log_format_flags() -> None:
    assert EnvoyFormatter("[%l][%n] %v").format(record("hi")) == "[info][upstream] hi"
    assert EnvoyFormatter("%L|%s:%#|%!|%%|%Q").format(record("x")) == "I|x.py:42|f|%|%Q"
    assert EnvoyFormatter("%j").format(record('a "b"\nc')) == 'a \\"b\\"\\nc'
    assert EnvoyFormatter("%_").format(record("a\nb")) == "a\\nb"
    assert EnvoyFormatter("[%n]").format(record("x", name="envoi")) == "[main]"
    assert EnvoyFormatter("%e").format(record("x")) == "250"


def test_component_levels() -> None:
    assert parse_component_levels("upstream:debug,http:trace") == {
        "upstream": logging.DEBUG, "http": logging.DEBUG}
    with pytest.raises(LogSetupError, match="invalid component specified 'nope'"):
        parse_component_levels("nope:debug")


def test_debug_shows_connection_and_stream_life(tmp_path: Path) -> None:
    admin, port = free_port(), free_port()
    text = (ROOT / "examples/http_router.yaml").read_text()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text.replace("9901", str(admin)).replace("10080", str(port)))
    log = tmp_path / "envoi.log"
    proc = EnvoiProcess(cfg, admin, args=["-l", "debug", "--log-path", str(log),
                                          "--disable-plugin-autoload", "-p", "envoi_http.plugin"])
    proc.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.read() == b"hello from envoi\n"
        lines = wait_for(lambda: "encoding headers via codec" in log.read_text()
                         and log.read_text(), what="stream lines").splitlines()
    finally:
        proc.stop()
    conn = [ln for ln in lines if "] new connection from 127.0.0.1:" in ln]
    assert conn and '[debug][conn_handler] [Tags: "ConnectionId":"' in conn[0]
    cid = conn[0].split('"ConnectionId":"')[1].split('"')[0]
    stream = [ln for ln in lines if f'[Tags: "ConnectionId":"{cid}","StreamId":"' in ln]
    assert any("[debug][http]" in ln and "request headers complete (end_stream=true):" in ln
               for ln in stream), lines
    assert any("encoding headers via codec (end_stream=" in ln for ln in stream)
    assert "':path', '/'" in "\n".join(lines)
