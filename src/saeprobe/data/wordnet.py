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

    WordNet is a DAG: a synset with several hypernyms keeps the first one listed in the file,
    so the tree is fixed by the file. A node's name is the first lemma in words.txt.
    """
    parents: dict[str, str | None] = {ROOT: None}
    for number, line in enumerate(Path(is_a).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{is_a}:{number}: expected 'parent child', got {line!r}")
        parent, child = fields
        if child != ROOT:
            parents.setdefault(child, parent)
    for child, parent in list(parents.items()):
        if parent is not None and parent not in parents:
            raise ValueError(f"{is_a}: hypernym {parent} of {child} is not reachable from {ROOT}")
    names = {}
    for line in Path(words).read_text().splitlines():
        wnid, _, lemmas = line.partition("\t")
        if wnid in parents:
            names[wnid] = lemmas.split(",")[0].strip()
    return Hierarchy(parents, names)


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
