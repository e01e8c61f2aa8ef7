"""The OOD detection figure: one panel per OOD group (near, far, legacy) where groups are
configured, a single panel of every set otherwise."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from saeprobe.plots.vision import ood_auroc

GROUPS = {"ssb_hard": "near", "ninco": "near", "textures": "far", "sun": "legacy"}


def ood_table(groups: dict[str, str] | None, sites: tuple[str, ...] = ("L1", "L2")) -> pd.DataFrame:
    """Rows as ood_detection.csv has them: raw and two SAEs' scores per set and site, and with
    `groups` an ood_group column and a "<group> (mean)" row per group."""
    rows = []
    sets = [*GROUPS, "world_ood_texture"]
    for site in sites:
        for features in ("raw", "topk", "relu"):
            for score in ("knn", "msp"):
                for i, dataset in enumerate(sets):
                    rows.append(
                        {
                            "model": "clip",
                            "site": site,
                            "features": features,
                            "score": score,
                            "ood_dataset": dataset,
                            "auroc": 0.5 + 0.05 * i,
                            "ood_group": (groups or {}).get(dataset, ""),
                        }
                    )
    table = pd.DataFrame(rows)
    if groups is None:
        return table.drop(columns="ood_group")
    grouped = table[table["ood_group"] != ""]
    keys = ["model", "site", "features", "score", "ood_group"]
    means = grouped.groupby(keys, as_index=False)["auroc"].mean()
    means["ood_dataset"] = means["ood_group"] + " (mean)"
    return pd.concat([table, means], ignore_index=True)


def _legend(ax: plt.Axes) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def test_groups_get_a_panel_each_with_their_sets_and_mean():
    fig = ood_auroc(ood_table(GROUPS))
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 2 * 4  # two sites x (near, far, legacy, no group)
    assert [t.split(" | ")[-1] for t in titles[:4]] == [
        "near-OOD",
        "far-OOD",
        "legacy-OOD",
        "no group",
    ]
    assert titles[4].startswith("clip | L2")
    near, far, legacy, other = (_legend(ax) for ax in fig.axes[:4])
    assert near == ["ninco", "ssb_hard", "near (mean)"]
    assert far == ["textures", "far (mean)"] and legacy == ["sun", "legacy (mean)"]
    assert other == ["world_ood_texture"]
    plt.close(fig)


def test_without_groups_a_single_panel_per_site_holds_every_set():
    fig = ood_auroc(ood_table(None))
    assert len(fig.axes) == 2
    assert fig.axes[0].get_title() == "clip | L1 | every OOD set"
    assert sorted(_legend(fig.axes[0])) == sorted([*GROUPS, "world_ood_texture"])
    plt.close(fig)
    fig = ood_auroc(ood_table({"ssb_hard": "near"}, sites=("L1",)))
    assert [ax.get_title().split(" | ")[-1] for ax in fig.axes] == ["near-OOD", "no group"]
    plt.close(fig)
