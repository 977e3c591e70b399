"""The effective configuration as plain data with every secret masked, for --check-config and /api output.

The whole tree is walked, whatever its sections and keys (a key added later is covered without a change here):
- a value whose key names a secret (`is_secret_key`: *password*, *secret*, *token*, sasl.*, ...) is masked,
  at any level and in any section, including dict-valued ones such as kafka.client;
- every URL inside any text keeps only scheme://host[:port]; its userinfo, path, query and fragment (where
  webhook and notification URLs carry their tokens) become the mask.
"""
from __future__ import annotations

import re

import msgspec

from .schema import Settings
from .secret import SECRET_ENV, Secrets

MASK = "***"
# Parts of a key name that say its value is secret (librdkafka sasl.password, ssl.key.password, ssl.key.pem,
# sasl.oauthbearer.client.secret, an API token, ...).
_SECRET_WORDS = ("password", "passwd", "secret", "token", "key.pem", "credential", "private_key")
_SECRET_PREFIXES = ("sasl.", "sasl_")  # every SASL property: sasl.jaas.config, sasl.oauthbearer.config carry secrets
# A URL anywhere inside a text: a scheme, "://", then everything up to white space or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]*")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._\-]+)(:[0-9]{1,5})?")
# Schemes whose host part is a network address. Others (notification URLs such as tgram://<bot token>/...,
# slack://TokenA/TokenB) carry secrets in the host part too: for them nothing after "://" is shown.
_NETWORK_SCHEMES = frozenset({
    "http", "https", "ws", "wss", "mqtt", "mqtts", "tcp", "ssl", "tls", "kafka", "plaintext", "sasl_ssl",
    "sasl_plaintext", "redis", "rediss", "postgres", "postgresql", "amqp", "amqps", "smtp", "smtps", "ftp", "ftps",
    "sftp", "ldap", "ldaps", "grpc", "grpcs", "json", "jsons", "xml", "xmls", "form", "forms",
})


def is_secret_key(name: str) -> bool:
    """True for a key (at any level of the config) whose value must never be shown."""
    lowered = name.lower()
    return lowered.startswith(_SECRET_PREFIXES) or any(word in lowered for word in _SECRET_WORDS)


def mask_url(url: str) -> str:
    """scheme://host[:port] kept, the rest masked: https://u:p@h.example.com/x?t=1 -> https://***@h.example.com/***"""
    scheme, _, rest = url.partition("://")
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, host = netloc.rpartition("@")
    if scheme.lower() not in _NETWORK_SCHEMES or not _HOST_PORT.fullmatch(host):
        return f"{scheme}://{MASK}" if netloc or tail else url
    shown = f"{scheme}://{MASK + '@' if at else ''}{host}"
    return f"{shown}/{MASK}" if tail.strip("/") else shown + tail


def mask_urls(text: str) -> str:
    """`text` with every URL in it masked (mask_url)."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text) if "://" in text else text


def _masked_value(value):
    # Booleans and unset values say nothing secret (require_token_for_reads: false); everything else goes.
    if value is None or isinstance(value, bool) or value == "" or value == {} or value == []:
        return value
    return MASK


def mask_tree(node):
    """A copy of plain data (dicts, lists, scalars) with secret-named values and every URL masked."""
    if isinstance(node, dict):
        return {(mask_urls(k) if isinstance(k, str) else k):
                (_masked_value(v) if isinstance(k, str) and is_secret_key(k) else mask_tree(v))
                for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [mask_tree(v) for v in node]
    if isinstance(node, str):
        return mask_urls(node)
    return node


def redacted(settings: Settings) -> dict:
    """The effective configuration as plain data, every secret masked: for --check-config and /api output."""
    tree = mask_tree(msgspec.to_builtins(settings.config))
    secrets = {SECRET_ENV[f.name]: (MASK if getattr(settings.secrets, f.name) else "")
               for f in msgspec.structs.fields(Secrets)}
    out = {"path": mask_urls(settings.path), "config": tree, "secrets": secrets}
    if len(settings.files) > 1:
        out["paths"] = [mask_urls(p) for p in settings.files]
    return out
