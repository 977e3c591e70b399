"""TLS towards the MQTT broker, for every MQTT client of the pipeline: the bridge, the broker-stats watcher, the
system agent (thread or CLI) and the log handler all apply `TlsConfig` here, with the same meaning."""
from __future__ import annotations

import ssl

import paho.mqtt.client as mqtt

from ..config import TlsConfig


def configure_tls(client: mqtt.Client, tls: TlsConfig) -> None:
    """TLS with the broker's certificate verified (unless tls.insecure), optionally a client certificate.
    Does nothing when tls.enabled is false. A missing or unreadable file raises here, before any connection."""
    if not tls.enabled:
        return
    client.tls_set(ca_certs=tls.ca_file or None, certfile=tls.cert_file or None, keyfile=tls.key_file or None,
                   cert_reqs=ssl.CERT_NONE if tls.insecure else ssl.CERT_REQUIRED)
    client.tls_insecure_set(tls.insecure)
