"""The syntax a mapping (config `sources:`) is written in: paths into a payload tree and text templates.

A path is keys joined by '.': `uplink_message.decoded_payload.*`. `*` is any one key (or list element), `**` any
number of levels (none included); a list element is addressed by its index (`values.0`). A template is text with
`{name}` placeholders: a topic capture (`{sensor_id}`), `{.a.b}` a field of the record (a path without wildcards),
and, in a metric template only, `{path}` and `{key}` (what a reading path matched). Both are parsed here once, at
start, by the config check and by the mapping engine alike (pipeline/stages/mapping.py), so they agree.
"""
from __future__ import annotations

import re

ANY, DEEP = "*", "**"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
CAPTURE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_PATH_KEYS = 32


def parse_path(text: str) -> tuple[str, ...]:
    """'a.*.b' -> ('a', '*', 'b'); ValueError for an empty key, '***' or a path too long."""
    if not isinstance(text, str) or not text:
        raise ValueError("a path must be non-empty text (keys joined by '.')")
    steps = tuple(text.split("."))
    if len(steps) > MAX_PATH_KEYS:
        raise ValueError(f"path {text!r} has {len(steps)} keys, at most {MAX_PATH_KEYS}")
    for step in steps:
        if not step:
            raise ValueError(f"path {text!r} has an empty key (two dots, or a dot at an end)")
        if "*" in step and step not in (ANY, DEEP):
            raise ValueError(f"path {text!r}: key {step!r} mixes '*' with text (a key is literal, '*' or '**')")
    return steps


def has_wildcard(steps: tuple[str, ...]) -> bool:
    return any(s in (ANY, DEEP) for s in steps)


def parse_template(text: str) -> list[tuple[str, str]]:
    """'{a}-x{.b}' -> [('cap', 'a'), ('lit', '-x'), ('field', 'b')]; ValueError for a malformed placeholder."""
    if "{" not in text and "}" not in text:
        return [("lit", text)] if text else []
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(text):
        if m.start() > pos:
            out.append(("lit", text[pos:m.start()]))
        name = m.group(1)
        if name.startswith("."):
            steps = parse_path(name[1:])
            if has_wildcard(steps):
                raise ValueError(f"template {text!r}: field {{{name}}} has a wildcard (a field is one value)")
            out.append(("field", name[1:]))
        elif CAPTURE_NAME.fullmatch(name):
            out.append(("cap", name))
        else:
            raise ValueError(f"template {text!r}: placeholder {{{name}}} is neither a name nor a field ({{.a.b}})")
        pos = m.end()
    rest = text[pos:]
    if "{" in rest or "}" in rest or any("{" in t or "}" in t for k, t in out if k == "lit"):
        raise ValueError(f"template {text!r}: unbalanced '{{' or '}}'")
    if rest:
        out.append(("lit", rest))
    return out


def template_names(text: str, kind: str = "cap") -> list[str]:
    """The placeholders of one kind ('cap' or 'field') a template uses."""
    return [name for k, name in parse_template(text) if k == kind]
