"""Pareto plot of bench/results/layouts.json: per dataset, test AUC (top row) and log loss (bottom
row) against embedding parameters (log x), one line per layout with the seeds' std as error bars,
the per_feature full-size AUC - 0.002 as a dashed line and the 1/16 budget as a dotted line. The
per_feature full-size run with the first-order term (outside the layout budget) is one black star
at its real parameter count, a reference rather than a layout.

    python bench/plot_layouts.py [bench/results/layouts.json] [bench/results/layouts_pareto.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STYLE = {"per_feature": ("tab:blue", "o"), "mixed_dim": ("tab:orange", "s"),
         "unified": ("tab:green", "^"), "qr": ("tab:purple", "D"),
         "per_feature+first_order": ("black", "*")}
LABELS = {"per_feature+first_order": "per_feature full + first-order term"}


def plot(doc: dict[str, Any], out: Path) -> Path:
    aggs = [a for a in doc["aggregates"] if a["params"] is not None and a["auc"]["mean"]]
    datasets = sorted({a["dataset"] for a in aggs})
    target = doc.get("target", {})
    fraction = doc.get("target_spec", {}).get("fraction", 1 / 16)
    fig, axes = plt.subplots(2, max(len(datasets), 1), figsize=(5.2 * max(len(datasets), 1), 8),
                             squeeze=False)
    for col, dataset in enumerate(datasets):
        full = doc.get("datasets", {}).get(dataset, {}).get("per_feature_params")
        for row, metric in enumerate(("auc", "logloss")):
            ax = axes[row][col]
            for layout, (color, marker) in STYLE.items():
                pts = sorted((a for a in aggs if a["dataset"] == dataset
                              and a["layout"] == layout), key=lambda a: a["params"])
                if not pts:
                    continue
                ax.errorbar([a["params"] for a in pts], [a[metric]["mean"] for a in pts],
                            yerr=[a[metric]["std"] or 0.0 for a in pts], color=color,
                            marker=marker, capsize=3, label=LABELS.get(layout, layout),
                            markersize=11 if marker == "*" else 6,
                            linestyle="none" if len(pts) == 1 else "-")
            verdict = target.get(dataset, {})
            if metric == "auc" and "threshold_auc" in verdict:
                ax.axhline(verdict["threshold_auc"], color="black", linestyle="--", linewidth=1,
                           label="per_feature full AUC - 0.002")
            if full:
                ax.axvline(full * fraction, color="grey", linestyle=":", linewidth=1.2,
                           label="1/16 budget")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("embedding parameters")
            ax.set_ylabel("test AUC" if metric == "auc" else "test log loss")
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                ax.set_title(dataset)
            ax.legend(fontsize=7, loc="lower right" if metric == "auc" else "upper right")
    fig.suptitle("Embedding layouts: quality vs parameters (mean ± std over seeds)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else RESULTS / "layouts.json"
    out = Path(argv[1]) if len(argv) > 1 else src.with_name(src.stem + "_pareto.png")
    plot(json.loads(src.read_text()), out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
