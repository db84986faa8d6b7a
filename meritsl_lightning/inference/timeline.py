"""``timeline.png``: each conversation's turns on a time axis, coloured by predicted emotion, the predicted
label's probability as bar height, the turn number above. Turns left out of the analysis are drawn as grey
hatched stubs."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

MAX_CONVERSATIONS = 12


def plot_timeline(records: list[dict[str, Any]], label_names: list[str], out: str | os.PathLike) -> int:
    """Write the figure; returns how many conversations it shows (at most ``MAX_CONVERSATIONS``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    by_conversation: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_conversation[r["conversation"]].append(r)
    names = list(by_conversation)[:MAX_CONVERSATIONS]
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(label_names)}
    row_height = 2.0
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 0.5 + row_height * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        turns = by_conversation[name]
        timed = all(r["start"] is not None and r["end"] is not None for r in turns)
        for r in turns:
            left, width = (r["start"], r["end"] - r["start"]) if timed else (r["turn"] - 0.4, 0.8)
            if r["label"] is None:
                ax.bar(left, 0.06, width=width, align="edge", color="0.75", hatch="//", edgecolor="0.5")
                continue
            height = r["probs"][r["label"]] if r.get("probs") else min(1.0, abs(r.get("score", 0.0)) / 3)
            ax.bar(left, height, width=width, align="edge", color=colours[r["label"]], edgecolor="white", linewidth=0.5)
            ax.text(left + width / 2, height + 0.02, str(r["turn"]), ha="center", va="bottom", fontsize=7, color="0.3")
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("p(label)")
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_xlabel("time (s)" if timed else "turn")
        ax.spines[["top", "right"]].set_visible(False)
    handles = [Patch(color=colours[n], label=n) for n in label_names]
    if any(r["label"] is None for n in names for r in by_conversation[n]):
        handles.append(Patch(facecolor="0.75", hatch="//", edgecolor="0.5", label="left out"))
    fig.legend(handles=handles, loc="upper right", ncol=len(handles), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (0.5 + row_height * len(names))))
    fig.savefig(Path(out), dpi=80)
    plt.close(fig)
    return len(names)
