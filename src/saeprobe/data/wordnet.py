"""The WordNet hierarchy over ImageNet classes, from ImageNet's `wordnet.is_a.txt` and
`words.txt` (one `parent child` pair, and one `wnid<TAB>names` line, per line)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from saeprobe.hierarchy import Hierarchy, write_hierarchy

log = logging.getLogger(__name__)

ROOT = "n00001740"  # entity


def read_wordnet(is_a: str | Path, words: str | Path) -> Hierarchy:
    """A tree over every synset reachable from `entity`.

    WordNet is a DAG: a synset with several hypernyms keeps the one on its longest path to
    the root (the deepest hypernym: the most specific grouping, so the tree loses as little
    depth as it can), ties going to the smallest wnid; the tree does not depend on the order
    of the file's lines. A node's name is the first lemma in words.txt.
    """
    hypernyms: dict[str, list[str]] = {}
    for number, line in enumerate(Path(is_a).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{is_a}:{number}: expected 'parent child', got {line!r}")
        parent, child = fields
        if child != ROOT:
            hypernyms.setdefault(child, []).append(parent)
    depth = _longest_depths(hypernyms, str(is_a))
    parents: dict[str, str | None] = {ROOT: None}
    for child, options in hypernyms.items():
        reachable = [p for p in options if p in depth]
        if not reachable:
            raise ValueError(f"{is_a}: no hypernym of {child} ({options}) is reachable from {ROOT}")
        parents[child] = max(reachable, key=lambda p: (depth[p], _Reversed(p)))
    names = {}
    for line in Path(words).read_text().splitlines():
        wnid, _, lemmas = line.partition("\t")
        if wnid in parents:
            names[wnid] = lemmas.split(",")[0].strip()
    return Hierarchy(parents, names)


class _Reversed(str):
    """A string that sorts backwards: max() over it picks the smallest."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)

    def __gt__(self, other: str) -> bool:
        return str.__lt__(self, other)


def _longest_depths(hypernyms: Mapping[str, list[str]], source: str) -> dict[str, int]:
    """Each synset reachable from ROOT -> the length of its longest hypernym path to ROOT
    (ROOT: 0); synsets with no path to ROOT are left out."""
    depth: dict[str, int] = {ROOT: 0}
    unreachable: set[str] = set()
    for start in hypernyms:
        stack, visiting = [start], set()
        while stack:
            node = stack[-1]
            if node in depth or node in unreachable:
                stack.pop()
                continue
            pending = [
                p for p in hypernyms.get(node, []) if p not in depth and p not in unreachable
            ]
            if pending:
                if node in visiting:
                    raise ValueError(f"{source}: hypernym cycle through {node}")
                visiting.add(node)
                stack.extend(pending)
                continue
            known = [depth[p] for p in hypernyms.get(node, []) if p in depth]
            if known:
                depth[node] = 1 + max(known)
            else:
                unreachable.add(node)
            stack.pop()
    return depth


def download_wordnet(
    is_a: Mapping[str, Any], words: Mapping[str, Any], out: str | Path
) -> Hierarchy:
    """Download `wordnet.is_a.txt` and `words.txt` ({url, sha256?} each; checksummed and
    resumable, see `data.download.ensure`) next to `out` and write their hierarchy to `out`."""
    from saeprobe.data.download import ensure

    out = Path(out)
    files = {
        key: ensure(entry["url"], out.parent / Path(entry["url"]).name, entry.get("sha256"))
        for key, entry in (("is_a", is_a), ("words", words))
    }
    hierarchy = read_wordnet(files["is_a"], files["words"])
    log.info("%r", hierarchy)
    write_hierarchy(hierarchy, out)
    return hierarchy
