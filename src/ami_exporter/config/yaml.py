"""A YAML walker that keeps line numbers, for the servers file and the web config file.

The file is composed into nodes (not loaded into plain Python values), so every problem can be
reported as a one-line :class:`~ami_exporter.config.errors.ConfigError` naming ``file:line``.
The typed getters of :class:`Node` raise exactly that.

These files hold secrets and are read at start and on reload, so composing is strict:

* only a regular file of at most :data:`~ami_exporter.config.files.CONFIG_FILE_LIMIT` is read;
* anchors and aliases (``&name``, ``*name``) are refused: no alias bomb can expand, and a
  secret that starts with ``*`` or ``&`` gets the advice to quote it, not a silent anchor;
* explicit tags (``!name``, ``!!int``) are refused, but for ``!!str``: a secret that starts
  with ``!`` is never echoed as an "unknown tag" nor crashes a constructor;
* a key that is a list or a mapping, a duplicate key at any level (both lines named) and
  nesting deeper than :data:`MAX_DEPTH` are errors;
* no message quotes a value: PyYAML's own messages have their quoted fragments masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent, CollectionStartEvent, Event, ScalarEvent
from yaml.resolver import Resolver

from ami_exporter.config.errors import ConfigError
from ami_exporter.config.files import CONFIG_FILE_LIMIT, read_regular_file

__all__ = ["MAX_DEPTH", "Node", "compose_file"]

# Real files nest four levels (servers, a server, its keys); this only stops pathological ones
# before the recursive composer and constructor run out of stack.
MAX_DEPTH: Final = 32
_SIZE_WHY: Final = "a servers file of a thousand servers takes under 200 KB"
_STR_TAG: Final = "tag:yaml.org,2002:str"
_NULL_TAG: Final = "tag:yaml.org,2002:null"  # what the resolver makes of a plain ``~``, ``null``
_SYNTAX_HINT: Final = (
    "; quote a value that starts with ! & * @ ` | > % [ { or holds ': ' or ' #' "
    "(in single quotes, doubling any ' inside)"
)
# PyYAML quotes what it found ('x', "x"): a character or a name that may be part of a secret.
# Token names ('<block end>') and whitespace are kept: they are what fixes the file.
_QUOTED: Final = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_KEPT_QUOTED: Final = re.compile(r"<[a-z ]+>|\\t|\\n| ")


def compose_file(path: str, what: str) -> Node | None:
    """Read a YAML file into nodes; None for an empty file. ``what`` is the flag naming it."""
    data, _ = read_regular_file(path, what, "file", CONFIG_FILE_LIMIT, why=_SIZE_WHY)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: the file is not UTF-8 text") from None
    loader: _StrictComposer | None = None
    try:
        loader = _loader(text)  # PyYAML's own reader checks the characters here already
        root = loader.get_single_node()
    except _Refused as exc:
        raise ConfigError(f"{path}:{exc.line}: {exc.text}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            f"{path}:{line}: invalid YAML: control character U+{exc.character:04X} "
            "is not allowed (write it as an escape in a double-quoted value)"
        ) from None
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(getattr(exc, "problem", "") or ""):
            # PyYAML >= 6.0.4's libyaml stops deep nesting itself, before the walker would.
            where = _where(path, exc)
            raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
        raise ConfigError(f"{_where(path, exc)}: invalid YAML: {_problem(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return Node(root, path) if root is not None else None


def _where(path: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{path}:{mark.line + 1}" if mark is not None else path


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or "unreadable"
    return _QUOTED.sub(_mask, problem) + _SYNTAX_HINT


def _mask(match: re.Match[str]) -> str:
    return match.group() if _KEPT_QUOTED.fullmatch(match.group()[1:-1]) else "(not shown)"


def _shown(text: str, limit: int = 60) -> str:
    """A key for a message: quoted, escaped, bounded."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


class _Refused(Exception):
    """Something this walker does not accept, at a line of the file."""

    def __init__(self, mark: Any, text: str) -> None:
        super().__init__(text)
        self.line = mark.line + 1
        self.text = text


class _StrictComposer(Composer):
    """PyYAML's composer, refusing anchors, aliases, tags, odd keys and duplicates."""

    _depth = 0
    peek_event: Callable[[], Event]  # from the parser it is mixed with
    dispose: Callable[[], None]

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            raise _Refused(event.start_mark, _refusal("*", "a YAML alias"))
        if getattr(event, "anchor", None) is not None:
            raise _Refused(event.start_mark, _refusal("&", "a YAML anchor"))
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and not (tag == _STR_TAG and isinstance(event, ScalarEvent)):
            raise _Refused(event.start_mark, _refusal("!", "a YAML tag"))
        if isinstance(event, CollectionStartEvent) and self._depth >= MAX_DEPTH:
            raise _Refused(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        assert node is not None
        return node

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[str, yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise _Refused(key.start_mark, "a key must be a plain value, not a list or mapping")
            seen = first.setdefault(str(key.value), key)
            if seen is not key:
                raise _Refused(
                    key.start_mark,
                    f"duplicate key {_shown(str(key.value))} (first at line "
                    f"{seen.start_mark.line + 1})",
                )
        return node


def _refusal(char: str, what: str) -> str:
    return (
        f"a value starting with {char!r} is {what}, which this file does not allow; if it is a "
        f"value (a secret?), quote it in single quotes ('{char}...'), doubling any ' inside"
    )


class _PyLoader(
    _StrictComposer, yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, Resolver
):
    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        Resolver.__init__(self)
        _StrictComposer.__init__(self)


_loader: Callable[[str], _StrictComposer] = _PyLoader
try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    pass
else:

    class _CLoader(_StrictComposer, CParser, Resolver):
        """libyaml's scanner and parser (about five times faster), the strict composer."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Resolver.__init__(self)
            _StrictComposer.__init__(self)

    _loader = _CLoader


@dataclass(frozen=True, slots=True)
class Node:
    """A YAML node of a file, with its place in it for error messages."""

    raw: yaml.Node
    path: str

    @property
    def where(self) -> str:
        """``file:line`` of this node."""
        return f"{self.path}:{self.raw.start_mark.line + 1}"

    def error(self, text: str) -> ConfigError:
        """A ConfigError ``file:line: text`` about this node."""
        return ConfigError(f"{self.where}: {text}")

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.raw, yaml.MappingNode)

    @property
    def is_null(self) -> bool:
        """An empty value: nothing after the colon, ``~``, ``null`` or ``''`` (not ``'null'``)."""
        raw = self.raw
        return isinstance(raw, yaml.ScalarNode) and (raw.value == "" or raw.tag == _NULL_TAG)

    @property
    def scalar(self) -> str | None:
        """The text of a scalar as written, or None when this is a mapping or a sequence."""
        return str(self.raw.value) if isinstance(self.raw, yaml.ScalarNode) else None

    @property
    def key(self) -> str:
        """The text of a mapping key."""
        return str(self.raw.value)

    def pairs(self, expected: str = "expected a mapping") -> list[tuple[Node, Node]]:
        """The ``(key, value)`` nodes of a mapping, in file order (no duplicates: refused).

        Not a mapping: a ConfigError ``file:line: expected``.
        """
        if not isinstance(self.raw, yaml.MappingNode):
            raise self.error(expected)
        return [(Node(k, self.path), Node(v, self.path)) for k, v in self.raw.value]

    def mapping(
        self,
        expected: str = "expected a mapping",
        *,
        known: Collection[str] | None = None,
        unknown: str = "unknown key",
    ) -> dict[str, tuple[Node, Node]]:
        """The mapping by key; with ``known``, an unknown key is an error (in file order)."""
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in self.pairs(expected):
            key = key_node.key
            if known is not None and key not in known:
                raise key_node.error(f"{unknown} {_shown(key)}")
            out[key] = (key_node, value_node)
        return out

    def sequence(self) -> list[Node] | None:
        """The items of a sequence, or None when this is not one."""
        if not isinstance(self.raw, yaml.SequenceNode):
            return None
        return [Node(item, self.path) for item in self.raw.value]

    def text(self, what: str) -> str:
        """The text of a non-empty scalar, as written (no type conversion)."""
        if not isinstance(self.raw, yaml.ScalarNode) or not str(self.raw.value):
            raise self.error(f"{what} must be a non-empty string")
        return str(self.raw.value)

    def value(self) -> Any:
        """The Python value (str, int, float, bool, None, list, dict) YAML gives this node."""
        try:
            return yaml.SafeLoader("").construct_object(self.raw, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            # e.g. `2024-13-99`, resolved as a timestamp that no datetime can hold
            raise self.error("not a valid YAML value (quote it to make it a string)") from None
