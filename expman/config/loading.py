"""Reading one YAML file into plain Python values, with the position of every key.

Parsing is guarded against hostile input: a file that is too large, nesting that is
too deep, or aliases that would expand a small file into millions of nodes is
refused with a :class:`~expman.errors.ConfigError` before anything is built from it.
Duplicate keys, which YAML loaders silently collapse, are refused too, and so is
what the rest of expman could not hold: a tag other than YAML's plain ones
(``!!binary``, ``!!set``, ``!!timestamp``, ``!!python/...``, ``!custom``), an alias
inside the node it names (``&a [1, *a]``), and an integer beyond 64 bits (the
journal and the config hash are JSON).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from expman.errors import ConfigError

#: Limits on one config file (bytes, nesting depth, nodes after alias expansion).
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 200_000

_FLOAT = re.compile(
    r"""^(?:
     [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _PyLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """SafeLoader that reads ``1e-3`` as a float (as OmegaConf does) and no timestamps."""


# libyaml's parser (when PyYAML was built with it) reads the same documents ten times
# faster; planning thousands of trials is mostly parsing trials.yaml.
_CLoader: Any = getattr(yaml, "CSafeLoader", None)
_Loader: Any = type("_Loader", (_CLoader,), {}) if _CLoader is not None else _PyLoader
for _cls in {_PyLoader, _Loader}:
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    _cls.yaml_implicit_resolvers = {
        key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for key, resolvers in _cls.yaml_implicit_resolvers.items()
    }
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)

#: The tags a config may hold: YAML's plain scalars, lists and mappings (and ``<<``).
PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge")
)
_INT_TAG = "tag:yaml.org,2002:int"
#: The integers every part of expman can hold (orjson, the journal: signed 64 bits).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: An integer scalar this long or shorter cannot exceed 64 bits (``0x`` and 15 hex
#: digits): its text is not parsed twice.
_SHORT_INT = 17
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_depth(text: str, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream (no recursion)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(
                    f"nesting deeper than {MAX_DEPTH} levels",
                    file=path,
                    line=event.start_mark.line + 1,
                )
        elif isinstance(event, _CLOSE):
            depth -= 1


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A parsed file: its data and the 1-based line of each key path."""

    path: Path
    data: Any
    lines: dict[str, int] = field(default_factory=dict)

    def line(self, key: str) -> int | None:
        """The line of ``key`` or of its nearest ancestor that has one."""
        while key:
            if key in self.lines:
                return self.lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return None

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError at ``key`` of this file."""
        return ConfigError(message, file=self.path, key=key or None, line=self.line(key))


def join_key(prefix: str, key: object) -> str:
    """``prefix.key`` for mapping keys, ``prefix[i]`` for list indices."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def load_yaml(path: Path) -> YamlDocument:
    """Parse ``path``; any problem is a ConfigError naming the file and position."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=path) from None
    if size > MAX_FILE_BYTES:
        raise ConfigError(
            f"file is {size} bytes; config files are limited to {MAX_FILE_BYTES} bytes",
            file=path,
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason})", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=path) from None

    loader = _Loader(text)
    try:
        if _Loader is not _PyLoader:
            # libyaml composes recursively in C: bound the depth before it does.
            _check_depth(text, path)
        node = loader.get_single_node()
        lines: dict[str, int] = {}
        if node is not None:
            _inspect(node, path, lines, loader)
            data = loader.construct_document(node)
        else:
            data = None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            f"YAML syntax error: {problem}",
            file=path,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:  # the reader's errors (a control character) have no mark
        raise ConfigError(f"YAML error: {str(exc).splitlines()[0]}", file=path) from None
    except RecursionError:
        raise ConfigError(f"nesting deeper than {MAX_DEPTH} levels", file=path) from None
    except (ValueError, TypeError) as exc:  # a constructor's own error: !!int abc, !!float x
        key, at = _bad_scalar(node, loader)
        raise ConfigError(
            f"not a valid value: {exc}", file=path, key=key or None, line=at
        ) from None
    finally:
        loader.dispose()
    return YamlDocument(path=path, data=data, lines=lines)


def int_problem(value: int, *, shown: str | None = None) -> str | None:
    """Why the integer ``value`` cannot be a config value (beyond 64 bits), or None."""
    if INT_MIN <= value <= INT_MAX:
        return None
    if shown is None:
        text = str(value)
        shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"
    return (
        f"the integer {shown} is beyond 64 bits; expected an integer from {INT_MIN}"
        f" to {INT_MAX} (write a larger number as a float, 1e20, or quote it as a string)"
    )


def _bad_scalar(root: yaml.Node, loader: Any) -> tuple[str, int | None]:
    """The key path and line of the first int or float scalar that does not construct.

    Only called once constructing the document failed, so the happy path never pays.
    """
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()
    while stack:
        node, key = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            construct = loader.yaml_constructors.get(node.tag)
            try:
                if construct is not None:
                    construct(loader, node)
            except (ValueError, TypeError):
                return key, node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            for k_node, v_node in reversed(node.value):
                name = str(k_node.value) if isinstance(k_node, yaml.ScalarNode) else "?"
                stack += [(v_node, join_key(key, name)), (k_node, join_key(key, name))]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, join_key(key, i)) for i, item in reversed(list(enumerate(node.value)))]
    return "", None


def _tag_problem(node: yaml.Node) -> str | None:
    tag = str(node.tag)
    if tag in PLAIN_TAGS:
        return None
    shown = "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:") else tag
    return (
        f"the YAML tag {shown!r} is not allowed; expected plain values (null, a boolean, a"
        " number, a string, a list or a mapping, without tags)"
    )


def _inspect(root: yaml.Node, path: Path, lines: dict[str, int], loader: Any) -> None:
    """Record key lines; refuse deep nesting, alias bombs, duplicate keys, tags, big ints."""
    sizes: dict[int, int] = {}
    #: The nodes being walked: meeting one again is an alias inside itself.
    open_nodes: set[int] = set()

    def refuse(node: yaml.Node, key: str, message: str) -> ConfigError:
        return ConfigError(message, file=path, key=key or None, line=node.start_mark.line + 1)

    def walk(node: yaml.Node, key: str, depth: int, record: bool) -> int:
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"nesting deeper than {MAX_DEPTH} levels",
                file=path,
                line=node.start_mark.line + 1,
            )
        if id(node) in open_nodes:
            raise refuse(
                node,
                key,
                "an alias inside the very list or mapping it names (a recursive alias such as"
                " &a [1, *a]); expected a value that does not contain itself",
            )
        known = sizes.get(id(node))
        if known is not None:  # an alias: its subtree counts again when expanded
            return known
        problem = _tag_problem(node)
        if problem is not None:
            raise refuse(node, key, problem)
        total = 1
        open_nodes.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _INT_TAG and len(node.value) > _SHORT_INT:
                try:
                    problem = int_problem(loader.construct_yaml_int(node))
                except ValueError:  # more digits than Python converts (4300)
                    problem = int_problem(INT_MAX + 1, shown=f"{node.value[:20]}...")
                if problem is not None:
                    raise refuse(node, key, problem)
        elif isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for k_node, v_node in node.value:
                k = str(k_node.value) if isinstance(k_node, yaml.ScalarNode) else "?"
                child = join_key(key, k)
                if record and k in seen and k != "<<":
                    raise ConfigError(
                        "duplicate key (YAML would silently keep only the last one)",
                        file=path,
                        key=child,
                        line=k_node.start_mark.line + 1,
                    )
                seen.add(k)
                if record:
                    lines.setdefault(child, k_node.start_mark.line + 1)
                walk(k_node, child, depth + 1, False)  # its tag and size; keys are not counted
                total += walk(v_node, child, depth + 1, record)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = join_key(key, i)
                if record:
                    lines.setdefault(child, item.start_mark.line + 1)
                total += walk(item, child, depth + 1, record)
        open_nodes.discard(id(node))
        if total > MAX_NODES:
            raise ConfigError(
                f"expands to more than {MAX_NODES} values (aliases multiplying a small file?)",
                file=path,
                key=key or None,
            )
        sizes[id(node)] = total
        return total

    walk(root, "", 0, True)
