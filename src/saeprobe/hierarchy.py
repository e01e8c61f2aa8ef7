"""A class hierarchy (tree) read from / written to `hierarchy.tsv` (columns node, parent, name).

The same file format carries the synthetic world's tree (entity > super:<name> > shape:<name>)
and a WordNet-derived tree for ImageNet, so ontology code reads one format.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from saeprobe.io import atomic_path

COLUMNS = ("node", "parent", "name")


class Hierarchy:
    """A rooted tree over string node ids.

    `depth(root) == 0`; `height(leaf) == 0` and `height(n)` is the longest path down to a leaf.
    """

    def __init__(self, parents: dict[str, str | None], names: dict[str, str] | None = None):
        roots = [n for n, p in parents.items() if p is None]
        if len(roots) != 1:
            raise ValueError(f"hierarchy: expected exactly one root (empty parent), found {roots}")
        missing = sorted({p for p in parents.values() if p is not None} - set(parents))
        if missing:
            raise ValueError(f"hierarchy: parents that are not nodes: {missing}")
        self.root: str = roots[0]
        self.parents: dict[str, str | None] = dict(parents)
        self.names: dict[str, str] = {n: (names or {}).get(n, n) for n in parents}
        self._children: dict[str, list[str]] = {n: [] for n in parents}
        for n, p in parents.items():
            if p is not None:
                self._children[p].append(n)
        self._depth: dict[str, int] = {}
        order = [self.root]
        self._depth[self.root] = 0
        for n in order:
            for c in self._children[n]:
                self._depth[c] = self._depth[n] + 1
                order.append(c)
        if len(order) != len(parents):
            cyclic = sorted(set(parents) - set(order))
            raise ValueError(f"hierarchy: nodes not reachable from root (cycle?): {cyclic[:10]}")
        self._height: dict[str, int] = {}
        for n in reversed(order):
            self._height[n] = 1 + max((self._height[c] for c in self._children[n]), default=-1)

    def __len__(self) -> int:
        return len(self.parents)

    def __contains__(self, node: object) -> bool:
        return node in self.parents

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Hierarchy)
            and self.parents == other.parents
            and self.names == other.names
        )

    def __repr__(self) -> str:
        return f"Hierarchy(root={self.root!r}, nodes={len(self)}, leaves={len(self.leaves())})"

    @property
    def nodes(self) -> list[str]:
        return list(self.parents)

    def _check(self, node: str) -> None:
        if node not in self.parents:
            raise KeyError(f"hierarchy: unknown node {node!r}")

    def parent(self, node: str) -> str | None:
        self._check(node)
        return self.parents[node]

    def children(self, node: str) -> list[str]:
        self._check(node)
        return list(self._children[node])

    def is_leaf(self, node: str) -> bool:
        self._check(node)
        return not self._children[node]

    def leaves(self, node: str | None = None) -> list[str]:
        """Leaves under `node` (the whole tree when None), in file order."""
        if node is None:
            return [n for n in self.parents if not self._children[n]]
        self._check(node)
        out, stack = [], [node]
        while stack:
            n = stack.pop()
            if self._children[n]:
                stack.extend(reversed(self._children[n]))
            else:
                out.append(n)
        return out

    def depth(self, node: str) -> int:
        self._check(node)
        return self._depth[node]

    def height(self, node: str) -> int:
        self._check(node)
        return self._height[node]

    def ancestors(self, node: str, include_self: bool = True) -> list[str]:
        """Path from `node` up to the root: [node, parent, ..., root]."""
        self._check(node)
        path = [node] if include_self else []
        p = self.parents[node]
        while p is not None:
            path.append(p)
            p = self.parents[p]
        return path

    def lowest_common_ancestor(self, nodes: Iterable[str]) -> str:
        """The deepest node that is an ancestor (or self) of every node in `nodes`."""
        nodes = list(nodes)
        if not nodes:
            raise ValueError("lowest_common_ancestor: needs at least one node")
        common = self.ancestors(nodes[0])
        for n in nodes[1:]:
            anc = set(self.ancestors(n))
            common = [a for a in common if a in anc]
        return common[0]

    def to_rows(self) -> list[tuple[str, str, str]]:
        return [(n, p or "", self.names[n]) for n, p in self.parents.items()]


def build_hierarchy(
    superclasses: Sequence[tuple[str, Sequence[str]]],
    root: str = "entity",
    supergroups: Sequence[tuple[str, Sequence[str]]] = (),
) -> Hierarchy:
    """The world tree: root > `super:<name>` > `shape:<name>` (held-out shapes included); with
    `supergroups` (name -> its superclasses) root > `group:<name>` > `super:<name>` > shape."""
    parents: dict[str, str | None] = {root: None}
    names = {root: root}
    group_of = {}
    for group, members in supergroups:
        parents[f"group:{group}"] = root
        names[f"group:{group}"] = group
        group_of.update({m: f"group:{group}" for m in members})
    for sup, members in superclasses:
        parents[f"super:{sup}"] = group_of.get(sup, root)
        names[f"super:{sup}"] = sup
        for shape in members:
            parents[f"shape:{shape}"] = f"super:{sup}"
            names[f"shape:{shape}"] = shape
    return Hierarchy(parents, names)


def write_hierarchy(hierarchy: Hierarchy, path: str | Path) -> None:
    """Write `hierarchy.tsv` atomically (temp name, then os.replace)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(hierarchy.to_rows())


def read_hierarchy(path: str | Path) -> Hierarchy:
    """Read `hierarchy.tsv`; errors name the file, line and what was expected."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(header[:3]) != COLUMNS:
            raise ValueError(f"{path}: expected a header with columns {COLUMNS}, got {header}")
        parents: dict[str, str | None] = {}
        names: dict[str, str] = {}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 2 or not row[0]:
                raise ValueError(f"{path}:{lineno}: expected node<TAB>parent<TAB>name, got {row}")
            node, parent = row[0], row[1] or None
            if node in parents:
                raise ValueError(f"{path}:{lineno}: node {node!r} appears twice")
            parents[node] = parent
            names[node] = row[2] if len(row) > 2 and row[2] else node
    try:
        return Hierarchy(parents, names)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
