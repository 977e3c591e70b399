"""Reading a payload tree by the paths of a mapping (syntax: pipeline/registry/paths.py), compiled once.

A compiled path is a function tree -> [(keys, value)], `keys` every key from the root to the value (list
indexes as text). A path that reaches an object or list gives every number below it (`leaves`). The work is
bounded by what the parser let in (payload size, nesting depth) and by `limit` values per call.
"""
from __future__ import annotations

from typing import Any, Callable

from ..records import Invalid
from ..registry.paths import ANY, DEEP, parse_path

Found = list[tuple[tuple[str, ...], Any]]


def _children(node: Any):
    if type(node) is dict:
        return node.items()
    if type(node) is list:
        return ((str(i), v) for i, v in enumerate(node))
    return ()


def _step(frontier: Found, step: str, limit: int) -> Found:
    out: Found = []
    if step == ANY:
        for keys, node in frontier:
            for k, v in _children(node):
                out.append((keys + (k,), v))
    elif step == DEEP:  # the node itself and every container or value below it
        stack = list(frontier)
        while stack:
            keys, node = stack.pop()
            out.append((keys, node))
            if len(out) > limit:
                break
            for k, v in _children(node):
                stack.append((keys + (k,), v))
    else:
        for keys, node in frontier:
            if type(node) is dict:
                if step in node:
                    out.append((keys + (step,), node[step]))
            elif type(node) is list and step.isdigit() and int(step) < len(node):
                out.append((keys + (step,), node[int(step)]))
    if len(out) > limit:
        raise Invalid("too_many_readings", f"a path matched more than {limit} values")
    return out


def leaves(found: Found, limit: int) -> Found:
    """Objects and lists replaced by the scalars below them (in document order)."""
    for _, v in found:
        if type(v) is dict or type(v) is list:
            break
    else:
        return found
    out: Found = []
    for keys, value in found:
        if type(value) is not dict and type(value) is not list:
            out.append((keys, value))
            continue
        stack = [(keys, value)]
        while stack:
            k0, node = stack.pop()
            if type(node) is dict or type(node) is list:
                stack.extend(reversed([(k0 + (k,), v) for k, v in _children(node)]))
            else:
                out.append((k0, node))
                if len(out) > limit:
                    raise Invalid("too_many_readings", f"more than {limit} values under the reading paths")
    return out


def compile_path(text: str) -> Callable[[Any, int], Found]:
    """(tree, limit) -> [(name keys, value)]: the keys from the path's first wildcard on (without one, its last
    key), and below it when the path reached an object: what `{path}` joins and `{key}` ends with."""
    steps = parse_path(text)
    while len(steps) > 1 and steps[-1] == DEEP:  # '**' last: the object's values, which leaves() gives anyway
        steps = steps[:-1]
    wild = [i for i, s in enumerate(steps) if s in (ANY, DEEP)]
    if not wild:  # literal keys only: follow them, no lists of candidates
        last = (steps[-1],)

        def literal(tree: Any, limit: int) -> Found:
            node = tree
            for s in steps:
                if type(node) is dict:
                    if s not in node:
                        return []
                    node = node[s]
                elif type(node) is list and s.isdigit() and int(s) < len(node):
                    node = node[int(s)]
                else:
                    return []
            return [(last, node)]
        return literal
    prefix, rest = steps[:wild[0]], steps[wild[0]:]
    if rest == (ANY,):  # the usual shape, 'a.b.*': the object's own items
        def items(tree: Any, limit: int) -> Found:
            node = tree
            for s in prefix:
                if type(node) is not dict or s not in node:
                    return []
                node = node[s]
            if type(node) is dict:
                if len(node) > limit:
                    raise Invalid("too_many_readings", f"a path matched {len(node)} values > {limit}")
                return [((k,), v) for k, v in node.items()]
            return _step([((), node)], ANY, limit)
        return items

    def walk(tree: Any, limit: int) -> Found:
        node = tree
        for s in prefix:
            if type(node) is not dict or s not in node:
                return []
            node = node[s]
        frontier: Found = [((), node)]
        for s in rest:
            frontier = _step(frontier, s, limit)
            if not frontier:
                break
        return frontier
    return walk


def compile_field(text: str) -> Callable[[Any], Any]:
    """A path without wildcards -> tree -> the value there (None when absent)."""
    steps = parse_path(text)
    if len(steps) == 1 and not steps[0].isdigit():
        key = steps[0]
        return lambda tree: tree.get(key) if type(tree) is dict else None

    def get(tree: Any) -> Any:
        node = tree
        for s in steps:
            if type(node) is dict:
                node = node.get(s)
            elif type(node) is list and s.isdigit() and int(s) < len(node):
                node = node[int(s)]
            else:
                return None
        return node
    return get
