"""Redis clients: TLS, timeouts and credentials from config, the password only from the environment."""
from __future__ import annotations

import redis

from ..config import RedisConfig, Secret


def connect(cfg: RedisConfig, password: Secret) -> redis.Redis:
    """A client from config; the password only from the environment."""
    tls = {}
    if cfg.tls.enabled:  # verification on unless redis.tls.insecure
        tls = dict(ssl=True, ssl_ca_certs=cfg.tls.ca_file or None, ssl_certfile=cfg.tls.cert_file or None,
                   ssl_keyfile=cfg.tls.key_file or None, ssl_cert_reqs="none" if cfg.tls.insecure else "required",
                   ssl_check_hostname=not cfg.tls.insecure)
    return redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db, username=cfg.username or None,
                       password=password.reveal() or None, socket_timeout=cfg.socket_timeout_s,
                       socket_connect_timeout=cfg.socket_timeout_s, health_check_interval=30, **tls)
