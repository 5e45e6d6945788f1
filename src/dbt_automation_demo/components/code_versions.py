"""Code versions that follow what dbt compiles, not only the model's own file.

dagster-dbt's code version is the SHA-1 of the model's own SQL (dagster-io/dagster#22566), so
an edit to a macro the model calls, or to an ephemeral model it inlines, changes the SQL dbt
runs without changing the code version: Dagster sees no edit and the view is not refreshed.

Here a model's code version also covers, from dbt's manifest:
- every macro it calls, directly or through other macros, in this project or a package
  (``depends_on.macros``, each macro's ``macro_sql`` and its own ``depends_on.macros``);
- the code versions of the ephemeral models it inlines, recursively.

Only logic counts, as in dbt State's change detection: comments (SQL ``--`` and ``/* */``,
Jinja ``{# #}``) and whitespace are left out of the model's and its macros' code before it is
hashed, so an edit that changes only those gives the same code version (dbt's
``state:modified`` reports it). Anything inside a quoted string or identifier still counts.
Descriptions, tests and configs are not part of it (dbt's ``state:modified`` also follows
configs; see docs).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

# One token at a time, left to right, so a comment marker inside a string is part of the
# string and a quote inside a comment is part of the comment.
_TOKENS = re.compile(
    r"""(?P<quoted>'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`)"""
    r"|(?P<comment>--[^\n]*|/\*.*?\*/|\{#.*?#\})"
    r"|(?P<space>\s+)"
    r"|(?P<code>[^'\"`\s/{-]+|.)",
    re.DOTALL,
)
# Whitespace next to these changes no meaning, in SQL or in Jinja; elsewhere one space is kept
# (`a - -1` is not `a --1`, nor `'a' 'b'` the string `'a''b'`).
_PUNCTUATION = frozenset("(),;=<>+*/|.:[]{}%!")


class CompiledSqlCodeVersions:
    """The code version of each node of one dbt manifest, computed once per node."""

    def __init__(self, manifest: Mapping[str, Any]):
        self.manifest = manifest
        self._versions: dict[str, str | None] = {}

    def of(self, node: Mapping[str, Any]) -> str | None:
        """The code version of a manifest node (a model, seed, snapshot or source)."""
        unique_id = node["unique_id"]
        if unique_id not in self._versions:
            self._versions[unique_id] = self._compute(node)
        return self._versions[unique_id]

    def _compute(self, node: Mapping[str, Any]) -> str | None:
        own = _own_code_version(node)
        depends_on = node.get("depends_on", {})
        macros = sorted(self._macros_called(depends_on.get("macros", ())))
        ephemerals = sorted(
            unique_id for unique_id in depends_on.get("nodes", ()) if self._is_ephemeral(unique_id)
        )
        if own is None or not (macros or ephemerals):
            return own
        digest = hashlib.sha1(own.encode())
        for unique_id in macros:
            digest.update(f"\0{unique_id}\0{self._macro_sql(unique_id)}".encode())
        for unique_id in ephemerals:
            digest.update(f"\0{unique_id}\0{self.of(self.manifest['nodes'][unique_id])}".encode())
        return digest.hexdigest()

    def _macros_called(self, direct: Any) -> set[str]:
        seen: set[str] = set()
        pending = list(direct)
        while pending:
            unique_id = pending.pop()
            if unique_id in seen:
                continue
            seen.add(unique_id)
            macro = self.manifest["macros"].get(unique_id, {})
            pending.extend(macro.get("depends_on", {}).get("macros", ()))
        return seen

    def _macro_sql(self, unique_id: str) -> str:
        return logic_only(self.manifest["macros"].get(unique_id, {}).get("macro_sql", ""))

    def _is_ephemeral(self, unique_id: str) -> bool:
        node = self.manifest["nodes"].get(unique_id)
        return node is not None and node.get("config", {}).get("materialized") == "ephemeral"


def _own_code_version(node: Mapping[str, Any]) -> str | None:
    """The SHA-1 of the node's own logic; a seed's is dagster-dbt's (its file's checksum)."""
    code = node.get("raw_code")
    if code:
        return hashlib.sha1(logic_only(code).encode()).hexdigest()
    return node.get("checksum", {}).get("checksum")


def logic_only(code: str) -> str:
    """SQL and Jinja `code` without its comments, with only the whitespace that separates two
    words or operators, each run as one space: an edit to comments or layout leaves it equal."""
    kept: list[str] = []
    pending_space = False
    for token in _TOKENS.finditer(code):
        kind, text = token.lastgroup, token.group()
        if kind in ("space", "comment"):
            pending_space = True  # a comment separates words as a space does
            continue
        if pending_space and kept and not _PUNCTUATION & {kept[-1][-1], text[0]}:
            kept.append(" ")
        pending_space = False
        kept.append(text)
    return "".join(kept)
