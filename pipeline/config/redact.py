"""The effective configuration as plain data with every secret masked, for --check-config and /api output."""
from __future__ import annotations

import msgspec

from .schema import Settings
from .secret import SECRET_ENV, Secrets

# librdkafka properties under kafka.client whose values are secret (sasl.password, ssl.key.password, ...).
_SECRET_WORDS = ("password", "secret", "token", "key.pem", "credentials", "sasl.jaas.config")
MASK = "***"


def is_secret_key(name: str) -> bool:
    """True for a kafka.client property whose value must never be shown."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redacted(settings: Settings) -> dict:
    """The effective configuration as plain data, every secret masked: for --check-config and /api output."""
    tree = msgspec.to_builtins(settings.config)
    client = tree["kafka"]["client"]
    for name in client:
        if is_secret_key(name):
            client[name] = MASK
    secrets = {SECRET_ENV[f.name]: (MASK if getattr(settings.secrets, f.name) else "")
               for f in msgspec.structs.fields(Secrets)}
    return {"path": settings.path, "config": tree, "secrets": secrets}
