"""Shared fixtures. Integration fixtures live in tests/integration/conftest.py."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Tests never read a developer's .env or the PIPELINE__* variables of the shell that runs them.
for name in [n for n in os.environ if n.startswith("PIPELINE__")]:
    del os.environ[name]
