"""Figures of a run, drawn from its summary.json alone: where instances were lost along the
stages (funnel.png), the resolved rate per repository (repositories.png), and cost and tokens
per instance (cost.png). A figure whose data the run does not have says so in its place."""
import argparse
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from scripts.common import open_atomic, read_json
from scripts.summary import FIGURES

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

DONE, LOST, NOTE = "#2f6f9f", "#c9d9e8", "#777777"


def note(ax, text):
    """Write text where a plot would be, for data the run does not have."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, color=NOTE, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def funnel_figure(summary):
    steps = summary["funnel"]
    selected = summary["counts"]["selected"]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(steps) + 1.2), layout="constrained")
    for row, step in enumerate(steps):
        n = step["instances"]
        if n is None:
            ax.text(0.01 * max(selected, 1), row, f"no data: {step['note']}", va="center", color=NOTE, fontsize=9)
            continue
        ax.barh(row, selected, color=LOST)
        ax.barh(row, n, color=DONE)
        ax.text(n, row, f" {n} ({100 * n / max(selected, 1):.0f}%)", va="center")
    ax.set_yticks(range(len(steps)), [step["stage"] for step in steps])
    ax.set_ylim(len(steps) - 0.5, -0.5)  # top to bottom, rows without a bar included
    ax.set_xlim(0, max(selected, 1) * 1.25)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("instances")
    ax.set_title(f"Where instances were lost: {summary['run_id']}, {selected} selected")
    return fig


def repositories_figure(summary):
    repos = summary["per_repo"]
    evaluated = bool(summary.get("resolution"))
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(repos) + 1.5), layout="constrained")
    if not repos:
        note(ax, "no instances selected")
        return fig
    rows = range(len(repos))
    ax.barh(rows, [100 * r["with_patch"] / r["selected"] for r in repos], color=LOST, label="with a patch")
    if evaluated:
        ax.barh(rows, [100 * r["resolved_rate"] for r in repos], color=DONE, label="resolved")
        for row, r in enumerate(repos):
            ax.text(100 * r["resolved_rate"], row, f" {r['resolved']}/{r['selected']}", va="center", fontsize=8)
        ax.set_title("Resolved rate per repository")
    else:
        for row, r in enumerate(repos):
            ax.text(100 * r["with_patch"] / r["selected"], row, f" {r['with_patch']}/{r['selected']}", va="center",
                    fontsize=8)
        ax.set_title("Share with a patch per repository (not evaluated: no resolved rate)")
    ax.set_yticks(rows, [r["repo"] for r in repos], fontsize=8)
    ax.set_ylim(len(repos) - 0.5, -0.5)
    ax.set_xlim(0, 112)
    ax.set_xlabel("% of the repository's selected instances")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return fig


def cost_figure(summary):
    answers = summary["per_instance"]
    fig, (cost_ax, token_ax) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    costs = [a["cost_usd"] or 0.0 for a in answers]
    if not answers:
        note(cost_ax, "no answers in this run (predictions given)")
        note(token_ax, "no answers in this run (predictions given)")
        return fig
    if any(costs):
        cost_ax.hist(costs, bins=min(30, len(costs)), color=DONE)
        cost_ax.set_xlabel("USD per instance")
        cost_ax.set_ylabel("instances")
        cost_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        cost_ax.set_title(f"Cost: {sum(costs):.4f} USD in all, {sum(costs) / len(costs):.4f} per instance")
    else:
        note(cost_ax, "no cost recorded: every answer cost 0\n(gold or replay answers, or a model with no price)")
    tokens_in = [a["input_tokens"] for a in answers]
    tokens_out = [a["output_tokens"] for a in answers]
    if any(tokens_in) or any(tokens_out):
        token_ax.scatter(tokens_in, tokens_out, s=12, color=DONE, alpha=0.7)
        token_ax.set_xlabel("input tokens")
        token_ax.set_ylabel("output tokens")
        token_ax.set_title(f"Tokens per instance ({len(answers)} answers)")
    else:
        note(token_ax, "no tokens recorded\n(gold or replay answers use no model)")
    return fig


DRAW = {"funnel": funnel_figure, "repositories": repositories_figure, "cost": cost_figure}


def make_figures(summary_path, out_dir):
    """Write out_dir/<name>.png for each figure; returns their paths."""
    summary = read_json(summary_path)
    paths = []
    for name in FIGURES:
        fig = DRAW[name](summary)
        path = Path(out_dir) / f"{name}.png"
        with open_atomic(path, "wb") as f:  # a killed job leaves no half-written figure
            fig.savefig(f, format="png", dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--summary", required=True, help="the run's summary.json")
    parser.add_argument("--out-dir", required=True, help="folder of the PNG files")
    args = parser.parse_args(argv)
    for path in make_figures(args.summary, args.out_dir):
        print(path)


if __name__ == "__main__":
    main()
