"""One-shot commands use the station's running server (gsp serve) instead of starting Prefect's ephemeral API."""

from __future__ import annotations

import http.server
import os
import threading

import pytest


@pytest.fixture
def station(tmp_path, monkeypatch):
    (tmp_path / "station.yaml").write_text(f"station: fast\nroots:\n  home: {tmp_path / 'home'}\n")
    monkeypatch.setenv("GSP_STATION", str(tmp_path / "station.yaml"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    import flows.runtime as rt

    monkeypatch.setattr(rt, "_EARLY", {})
    return tmp_path / "home"


def _health_server():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/api"


def test_a_running_gsp_serve_is_used_and_a_gone_one_is_not(station, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.runtime as rt

    srv, url = _health_server()
    # no API configured (a test harness earlier in the session may have set one)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not PREFECT_API_URL.value()
        _check(rt, station, monkeypatch, srv, url)


def _check(rt, station, monkeypatch, srv, url):
    from prefect.settings import PREFECT_API_URL

    try:
        with rt.announce_server(url):
            assert (station / "serve.json").is_file()
            with rt.prefect_api() as used:
                assert used == url and PREFECT_API_URL.value() == url
        assert not (station / "serve.json").exists()  # removed when serve stops
        monkeypatch.setattr(rt, "_EARLY", {})
        (station / "serve.json").write_text('{"api_url": "%s", "pid": %d}' % (url, 2**22 + 12345))  # a dead pid
        assert rt.station_server() is None
    finally:
        srv.shutdown()
    monkeypatch.setattr(rt, "_EARLY", {})
    (station / "serve.json").write_text('{"api_url": "%s", "pid": %d}' % (url, os.getpid()))  # alive, API gone
    assert rt.station_server(timeout_s=0.5) is None
