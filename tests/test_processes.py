"""processes.py: the one free-port probe, deadline wait, health check and process queries that src,
cluster/ and the tests share, against real sockets, a real HTTP server and real processes."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import time

from helpers import http_server
from mnist_np import processes


def test_a_free_port_can_be_listened_on_and_is_then_seen_listening():
    port = processes.free_port()
    with socket.socket() as server:
        server.bind((processes.HOST, port))
        server.listen()
        assert processes.listening([os.getpid()])[f"{processes.HOST}:{port}"] == os.getpid()
    assert f"{processes.HOST}:{port}" not in processes.listening([os.getpid()])


def test_wait_until_returns_the_first_true_value_or_none_at_the_deadline():
    start, calls = time.monotonic(), []
    assert processes.wait_until(lambda: calls.append(1) or (len(calls) >= 3 and "done"), 10, 0.01) == "done"
    assert processes.wait_until(lambda: 0, 0.3, 0.05) is None and time.monotonic() - start >= 0.3


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the handler's name is the HTTP method)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_answers_tells_a_healthy_server_from_a_wrong_path_and_a_closed_port():
    with http_server(Health) as url:
        assert processes.answers(url) and not processes.answers(url, "/ping")
    assert not processes.answers(f"http://{processes.HOST}:{processes.free_port()}")


def test_a_dead_unreaped_child_is_not_alive_and_parents_are_found():
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert processes.alive(child.pid)
        assert any(p.pid == os.getpid() for p in processes.ancestors(child.pid))
        assert [p.pid for p in processes.matching(lambda p: p.pid == child.pid)] == [child.pid]
        child.kill()
        assert processes.wait_until(lambda: not processes.alive(child.pid), 10)  # a zombie until waited for
        assert not processes.matching(lambda p: p.pid == child.pid)
    finally:
        child.kill()
        child.wait()
    assert not processes.alive(child.pid)
