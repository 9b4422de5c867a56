"""A YAML walker that keeps line numbers, for the servers file and the web config file.

The file is composed into nodes (not loaded into plain Python values), so every problem can be
reported as a one-line :class:`~ami_exporter.config.errors.ConfigError` naming ``file:line``.
The typed getters of :class:`Node` raise exactly that.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ami_exporter.config.errors import ConfigError

__all__ = ["Node", "compose_file"]

# What an empty section looks like: `key:`, `key: ~`, `key: null` (and `key: ''`).
_NULL_SCALARS = ("", "~", "null")


def compose_file(path: str, what: str) -> Node | None:
    """Read a YAML file into nodes; None for an empty file. ``what`` is the flag naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what}: {path!r} is not UTF-8 text") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_where(path, exc)}: invalid YAML: {_problem(exc)}") from None
    return Node(root, path) if root is not None else None


def _where(path: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{path}:{mark.line + 1}" if mark is not None else path


def _problem(exc: yaml.YAMLError) -> str:
    return getattr(exc, "problem", None) or str(exc)


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
        """An empty value: nothing after the colon, ``~`` or ``null``."""
        return isinstance(self.raw, yaml.ScalarNode) and self.raw.value in _NULL_SCALARS

    @property
    def scalar(self) -> str | None:
        """The text of a scalar as written, or None when this is a mapping or a sequence."""
        return str(self.raw.value) if isinstance(self.raw, yaml.ScalarNode) else None

    @property
    def key(self) -> str:
        """The text of a mapping key."""
        return str(self.raw.value)

    def pairs(self, expected: str = "expected a mapping") -> list[tuple[Node, Node]]:
        """The ``(key, value)`` nodes of a mapping, in file order (duplicates kept).

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
        """The mapping by key; a duplicate key (or, with ``known``, an unknown one) is an error.

        With ``known``, each key is checked in file order, unknown before duplicate.
        """
        out: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in self.pairs(expected):
            key = key_node.key
            if known is not None and key not in known:
                raise key_node.error(f"{unknown} {key!r}")
            if key in out:
                raise key_node.error(f"duplicate key {key!r}")
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
        except yaml.YAMLError as exc:
            raise self.error(f"invalid YAML: {_problem(exc)}") from None
