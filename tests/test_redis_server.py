"""The private redis-server test fixture: start, stop, restart on the same port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.support.redis_server import RedisServer, require_redis_server

pytestmark = pytest.mark.redis


@pytest.fixture
def server() -> Iterator[RedisServer]:
    require_redis_server()
    with RedisServer() as redis_server:
        yield redis_server


def client_for(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_connect_timeout=5, socket_timeout=5)


def test_starts_on_a_free_port_and_answers_ping(server: RedisServer) -> None:
    assert server.is_running()
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    with client_for(server) as client:
        assert client.ping() is True
        client.set("key", "value")
        assert client.get("key") == b"value"


def test_stop_refuses_connections(server: RedisServer) -> None:
    server.stop()
    assert not server.is_running()
    assert not server.ping()
    with client_for(server) as client, pytest.raises(redis.ConnectionError):
        client.ping()


def test_restart_serves_again_on_the_same_port(server: RedisServer) -> None:
    port = server.port
    with client_for(server) as client:
        client.set("before", "1")
        server.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.start()
        assert server.port == port
        # The same client reconnects; nothing was persisted (--save "").
        assert client.ping() is True
        assert client.get("before") is None
    server.restart()
    assert server.port == port
    with client_for(server) as client:
        assert client.ping() is True


def test_start_is_idempotent_and_close_removes_the_dir() -> None:
    require_redis_server()
    server = RedisServer()
    assert not server.is_running()
    server.start()
    try:
        port = server.port
        log_dir = server.log_path.parent
        assert server.start() is server
        assert server.port == port
    finally:
        server.close()
    assert not server.is_running()
    assert not log_dir.exists()


def test_two_servers_get_different_ports() -> None:
    require_redis_server()
    with RedisServer() as first, RedisServer() as second:
        assert first.port != second.port
        with client_for(first) as a, client_for(second) as b:
            a.set("where", "first")
            assert b.get("where") is None
