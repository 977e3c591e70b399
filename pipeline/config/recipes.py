"""The shipped recipes (deploy/formats/<family>.yaml): config fragments that map one device family's topics and
payloads (`sources:`), each used as a second `--config` after config.yaml.

`under_root` puts every topic of a recipe under one more level: tests and the benchmark give each run a topic
root of its own (`t1234/tele/{sensor_id}/SENSOR`), so runs share one broker without seeing each other's devices.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

# deploy/formats beside the package: this file is pipeline/config/recipes.py.
RECIPES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "formats"


def names() -> list[str]:
    """Every shipped recipe, by file name without .yaml."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def path(name: str) -> Path:
    """deploy/formats/<name>.yaml; LookupError naming the shipped ones for any other name."""
    p = RECIPES_DIR / f"{name}.yaml"
    if not p.is_file():
        raise LookupError(f"no recipe {name!r} in {RECIPES_DIR} (shipped: {', '.join(names())})")
    return p


def load(name: str) -> dict:
    """A recipe's config tree, as its file says (not yet validated: the config loader does that)."""
    return yaml.safe_load(path(name).read_text()) or {}


def under_root(tree: dict, root: str) -> dict:
    """A copy of a recipe tree whose mappings' topics and ignore filters all start with `root/`."""
    out = copy.deepcopy(tree)
    for source in out.get("sources") or []:
        source["topic"] = f"{root}/{source['topic']}"
        if source.get("ignore"):
            source["ignore"] = [f"{root}/{t}" for t in source["ignore"]]
    return out
