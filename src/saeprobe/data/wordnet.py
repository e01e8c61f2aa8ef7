"""The WordNet hierarchy over ImageNet classes, from ImageNet's `wordnet.is_a.txt` and
`words.txt` (one `parent child` pair, and one `wnid<TAB>names` line, per line)."""

from __future__ import annotations

from pathlib import Path

from saeprobe.hierarchy import Hierarchy

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
