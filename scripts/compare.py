"""Compare runs over the instances they share: the resolved rate of each with a 95% interval, pass@1
and pass@k when runs have samples, the paired difference of each pair with its interval and a paired
test, cost per resolved instance, per-repository rates, and the instances only one run resolved.
Writes compare.md, compare.json and two figures (compare.png, compare_repositories.png)."""
import argparse
import itertools
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from scripts.common import open_atomic, read_json, read_jsonl, write_json_atomic, write_text_atomic

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_DRAWS = 10000
SEED = 17  # fixed, so that the same runs give the same report
LISTED = 40  # instances named per run in compare.md's list of those only one run solved


class CompareError(ValueError):
    """Runs that cannot be compared, with what is wrong and how to fix it."""


# --- statistics ---

def pass_at_k(n, c, k):
    """The unbiased estimate of pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def wilson(successes, n, z=Z95):
    """Wilson score interval of a proportion (lower, upper)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(b, c):
    """Two-sided exact McNemar p: of the b + c discordant instances, each is as likely to favour either run
    under no difference, so min(b, c) is a binomial(b + c, 1/2) tail, doubled."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)


def paired_difference(both, only_a, only_b, neither, z=Z95):
    """The difference of two paired proportions (a's rate - b's) with Newcombe's hybrid score interval
    (method 10 of Newcombe 1998): the Wilson intervals of each rate, joined through the correlation of
    the pairs."""
    n = both + only_a + only_b + neither
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    (l_a, u_a), (l_b, u_b) = wilson(both + only_a, n, z), wilson(both + only_b, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    # the correlation of the pairs, with Newcombe's continuity correction of a positive one
    cross = both * neither - only_a * only_b
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    phi = cross / math.sqrt(margins) if margins else 0.0
    lower = math.sqrt(max(0.0, (p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2))
    upper = math.sqrt(max(0.0, (u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2))
    return p_a - p_b, (p_a - p_b - lower, p_a - p_b + upper)


def mean_se(values):
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def paired_bootstrap(a, b, draws=BOOTSTRAP_DRAWS, seed=SEED):
    """Per-instance scores of two runs on the same instances: mean(a) - mean(b), its 95% percentile
    interval from resampling instances with replacement (a drawn instance brings both runs' scores and
    all its samples), and the two-sided p of a paired sign-flip test (under no difference the two runs'
    scores of an instance are exchangeable, so each difference is as likely with either sign)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(axis=1)
    flipped = np.abs((diff * rng.choice([-1.0, 1.0], size=(draws, len(diff)))).mean(axis=1))
    # the observed assignment counts among the draws, so p is never 0
    p = (1 + np.sum(flipped >= abs(diff.mean()) - 1e-12)) / (draws + 1)
    return float(diff.mean()), (float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))), float(p)


def instance_pass_at_k(outcomes, k):
    """Per instance: the unbiased pass@k of its samples (a list of True/False)."""
    return [pass_at_k(len(s), sum(s), k) for s in outcomes]


def pass_at_k_table(outcomes, ks):
    """{k: mean over instances of pass@k} for each k."""
    return {k: float(np.mean(instance_pass_at_k(outcomes, k))) for k in ks}


# --- reading runs ---

def sample_dir(run_dir, sample):
    """The folder that holds a sample's files: the run folder for sample 1, samples/<s>/ beside it for the others."""
    return Path(run_dir) if sample == 1 else Path(run_dir) / "samples" / str(sample)


def instance_sample_dir(run_dir, instance_id, sample):
    folder = Path(run_dir) / "instances" / instance_id
    return folder if sample == 1 else folder / "samples" / str(sample)


def read_outcomes(run_dir, instance_ids, samples):
    """{instance_id: [outcome of sample 1..k]} and what the outcome is: "resolved" (by the harness) when
    every sample has its evaluation.json, else "valid patch" (the final patch verdict: repair.json's when
    the repair stage ran, else patch.json's; an instance without either has no valid patch)."""
    evaluations = [sample_dir(run_dir, s) / "evaluation.json" for s in range(1, samples + 1)]
    present = [path.is_file() for path in evaluations]
    if any(present) and not all(present):
        missing = [str(p) for p, here in zip(evaluations, present, strict=True) if not here]
        raise CompareError(f"run {run_dir} has evaluations of some samples but not of {', '.join(missing)}: "
                           "finish the run's evaluation (run the same snakemake command again) and compare again")
    if all(present):
        resolved = [set(read_json(path)["resolved_ids"]) for path in evaluations]
        return {i: [i in r for r in resolved] for i in instance_ids}, "resolved"
    outcomes = {}
    for i in instance_ids:
        outcomes[i] = []
        for s in range(1, samples + 1):
            folder = instance_sample_dir(run_dir, i, s)
            final = folder / "repair.json" if (folder / "repair.json").is_file() else folder / "patch.json"
            outcomes[i].append(final.is_file() and read_json(final)["status"] == "valid")
    return outcomes, "valid patch"


def run_cost(summary):
    """What the run cost in USD; None when it is not known: no summary, predictions given (what they cost
    is not known), or answers of a model without a price."""
    cost = summary.get("cost") or {}
    if summary.get("mode") == "predictions" or cost.get("unknown_cost_instances") or "total_usd" not in cost:
        return None
    return cost["total_usd"]


def read_run(run_dir):
    """A run folder's selection, settings and per-instance outcomes."""
    run_dir = Path(run_dir)
    if not (run_dir / "instances.jsonl").is_file():
        raise CompareError(f"{run_dir} is not a run folder: it has no instances.jsonl (give folders like "
                           "results/<run_id>, of runs whose select stage finished)")
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    run_info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    samples = int(summary.get("samples") or run_info.get("samples") or 1)
    rows = read_jsonl(run_dir / "instances.jsonl")
    repo_of = {row["instance_id"]: row["repo"] for row in rows}
    outcomes, outcome = read_outcomes(run_dir, list(repo_of), samples)
    validations = [run_dir / "instances" / i / "validation.json" for i in repo_of]
    validated = {path.parent.name: read_json(path)["validated"] for path in validations if path.is_file()}
    return {"dir": str(run_dir), "run_id": summary.get("run_id") or run_dir.name, "model": summary.get("model"),
            "provider": summary.get("provider"), "samples": samples, "outcome": outcome,
            "cost_usd": run_cost(summary),
            "repo_of": repo_of, "outcomes": outcomes, "validated": validated}


# --- the comparison ---

def rate_record(outcomes):
    """pass@1 of per-instance sample outcomes: with one sample the rate and its Wilson interval, with
    more the mean over instances of the share of resolved samples, its standard error and pass@k."""
    n_instances, samples = len(outcomes), min(len(s) for s in outcomes)
    first = sum(s[0] for s in outcomes)
    record = {"instances": n_instances, "samples": samples}
    if samples == 1:
        record |= {"successes": first, "pass@1": first / n_instances, "ci95": wilson(first, n_instances),
                   "interval": "Wilson score"}
    else:
        mean, se = mean_se([sum(s) / len(s) for s in outcomes])
        record |= {"pass@1": mean, "se": se, "ci95": (max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se)),
                   "interval": "normal, standard error over instances",
                   "per_sample": [sum(s[j] for s in outcomes) / n_instances for j in range(samples)],
                   "pass@k": {str(k): v for k, v in pass_at_k_table(outcomes, range(1, samples + 1)).items()}}
    record["any_sample"] = sum(any(s) for s in outcomes)
    return record


def compare_pair(a, b, shared):
    """The paired difference of two runs (a - b) over the shared instances."""
    out_a, out_b = [a["outcomes"][i] for i in shared], [b["outcomes"][i] for i in shared]
    record = {"a": a["label"], "b": b["label"], "instances": len(shared)}
    if a["samples"] == 1 and b["samples"] == 1:
        table = Counter((x[0], y[0]) for x, y in zip(out_a, out_b, strict=True))
        diff, ci = paired_difference(table[True, True], table[True, False], table[False, True], table[False, False])
        record["pass@1"] = {"difference": diff, "ci95": ci, "interval": "Newcombe hybrid score (paired)",
                            "test": "McNemar exact", "p": mcnemar_exact(table[True, False], table[False, True]),
                            "only_a": table[True, False], "only_b": table[False, True],
                            "both": table[True, True], "neither": table[False, False]}
    else:
        k = min(a["samples"], b["samples"])
        for name, kk in [("pass@1", 1)] + ([(f"pass@{k}", k)] if k > 1 else []):
            diff, ci, p = paired_bootstrap(instance_pass_at_k(out_a, kk), instance_pass_at_k(out_b, kk))
            record[name] = {"difference": diff, "ci95": ci, "interval": "paired bootstrap over instances, percentile",
                            "test": "paired sign-flip randomisation", "p": p}
    for stat in (v for key, v in record.items() if key.startswith("pass@")):
        stat["within_noise"] = stat["ci95"][0] <= 0 <= stat["ci95"][1]
    return record


def compare(runs, validated=False):
    """The comparison record of runs read by read_run, over the instances all of them share (validated: and
    whose environment the gold patch validated in every run)."""
    if len(runs) < 2:
        raise CompareError(f"compare needs two or more run folders, got {len(runs)}")
    outcomes = {r["outcome"] for r in runs}
    if len(outcomes) > 1:
        lacking = [r["dir"] for r in runs if r["outcome"] != "resolved"]
        raise CompareError(f"some runs were evaluated and some were not ({', '.join(lacking)} have no "
                           "evaluation.json): compare evaluated runs with evaluated runs, or evaluate these")
    if len({Path(r["dir"]).resolve() for r in runs}) < len(runs):
        raise CompareError("the same run folder is given twice: give each run once")
    labels = [r["run_id"] for r in runs]
    for r in runs:  # two runs of the same run_id (in different results folders) go by their folder
        r["label"] = r["run_id"] if labels.count(r["run_id"]) == 1 else r["dir"]
    shared = sorted(set.intersection(*(set(r["outcomes"]) for r in runs)))
    if not shared:
        raise CompareError(f"the runs share no instance ({', '.join(r['dir'] for r in runs)}): compare runs "
                           "over the same selection (the same dataset, split and instances)")
    broken = []
    if validated:
        unchecked = [r["dir"] for r in runs if not set(shared) <= set(r["validated"])]
        if unchecked:
            raise CompareError(f"--validated compares the instances whose environment the gold patch validated, and "
                               f"{', '.join(unchecked)} lack(s) a gold validation of some of them: run them with "
                               "--config validate_gold=true (validations are cached, so this evaluates only what is new)")
        broken = [i for i in shared if not all(r["validated"][i] for r in runs)]
        shared = [i for i in shared if i not in broken]
        if not shared:
            raise CompareError("the gold patch validated none of the shared instances: there is nothing to compare")
    repo_of = runs[0]["repo_of"]
    per_run = []
    for r in runs:
        stats = rate_record([r["outcomes"][i] for i in shared])
        resolved_all = sum(sum(s) for s in r["outcomes"].values())  # over the run's own selection and samples
        per_run.append({"run": r["label"], "dir": r["dir"], "model": r["model"], "provider": r["provider"],
                        "selected": len(r["outcomes"]), **stats, "cost_usd": r["cost_usd"],
                        "cost_per_success_usd": r["cost_usd"] / resolved_all if r["cost_usd"] is not None
                        and resolved_all else None})
    repos = sorted({repo_of[i] for i in shared})
    per_repo = [{"repo": repo, "instances": sum(repo_of[i] == repo for i in shared),
                 "pass@1": {r["label"]: float(np.mean([sum(r["outcomes"][i]) / len(r["outcomes"][i])
                                                       for i in shared if repo_of[i] == repo])) for r in runs}}
                for repo in repos]
    only = {r["label"]: [i for i in shared if any(r["outcomes"][i])
                         and not any(any(o["outcomes"][i]) for o in runs if o is not r)] for r in runs}
    return {"outcome": runs[0]["outcome"], "shared_instances": len(shared), "validated_only": validated,
            "environment_broken": broken, "runs": per_run,
            "pairs": [compare_pair(a, b, shared) for a, b in itertools.combinations(runs, 2)],
            "per_repo": per_repo, "only_one_resolved": only}


# --- the report ---

def pct(x):
    return f"{100 * x:.1f}%"


def verdict(pair, stat):
    """One plain sentence on a pair's difference."""
    s = pair[stat]
    p = f"p = {s['p']:.3g}, {s['test']}"
    if s["within_noise"]:
        return (f"{stat}: {pair['a']} - {pair['b']} = {100 * s['difference']:+.1f} points, 95% interval "
                f"[{100 * s['ci95'][0]:+.1f}, {100 * s['ci95'][1]:+.1f}] ({p}): **within noise**: the interval "
                "holds 0, these instances do not tell the two runs apart")
    better = pair["a"] if s["difference"] > 0 else pair["b"]
    return (f"{stat}: {pair['a']} - {pair['b']} = {100 * s['difference']:+.1f} points, 95% interval "
            f"[{100 * s['ci95'][0]:+.1f}, {100 * s['ci95'][1]:+.1f}] ({p}): **{better} is better** beyond noise")


def render_markdown(result):
    what = "resolved by the SWE-bench harness" if result["outcome"] == "resolved" else \
        "a valid patch (the runs were not evaluated: the outcome is patch validity, not resolution)"
    scope = " whose environment the gold patch validated" if result.get("validated_only") else ""
    broken = result.get("environment_broken") or []
    left_out = (f" Left out, environment broken here ({len(broken)}): {', '.join(broken)}." if broken else "")
    lines = ["# Compare", "", f"Outcome: {what}. Over the {result['shared_instances']} instances all runs share"
             f"{scope}.{left_out}", "",
             "## Runs", "", "| run | model | samples | pass@1 | 95% interval | solved by any sample | cost (USD) | "
             "cost per success (USD) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        rate = pct(r["pass@1"]) + (f" ± {100 * r['se']:.1f} (SE)" if r["samples"] > 1 else
                                   f" ({r['successes']}/{r['instances']})")
        cost = "unknown" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
        each = "-" if r["cost_per_success_usd"] is None else f"{r['cost_per_success_usd']:.4f}"
        lines.append(f"| {r['run']} | {r['model']} | {r['samples']} | {rate} | [{pct(r['ci95'][0])}, "
                     f"{pct(r['ci95'][1])}] {r['interval']} | {r['any_sample']} | {cost} | {each} |")
    with_k = [r for r in result["runs"] if r["samples"] > 1]
    if with_k:
        ks = sorted({int(k) for r in with_k for k in r["pass@k"]})
        lines += ["", "## pass@k", "", "Unbiased estimator 1 - C(n-c, k)/C(n, k) per instance (n samples, c "
                  "successes), averaged over instances.", "",
                  "| run | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        lines += [f"| {r['run']} | " + " | ".join(pct(r["pass@k"][str(k)]) if str(k) in r["pass@k"] else ""
                                                  for k in ks) + " |" for r in with_k]
    lines += ["", "## Paired differences", ""]
    for pair in result["pairs"]:
        lines.append(f"- {pair['a']} vs {pair['b']} ({pair['instances']} instances):")
        for stat in (k for k in pair if k.startswith("pass@")):
            s = pair[stat]
            counts = (f" Only {pair['a']}: {s['only_a']}, only {pair['b']}: {s['only_b']}, both: {s['both']}, "
                      f"neither: {s['neither']}." if "only_a" in s else "")
            lines.append(f"  - {verdict(pair, stat)}; interval: {s['interval']}.{counts}")
    labels = [r["run"] for r in result["runs"]]
    lines += ["", "## Repositories", "", "pass@1 per repository.", "",
              "| repository | instances | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    lines += [f"| {p['repo']} | {p['instances']} | " + " | ".join(pct(p["pass@1"][label]) for label in labels) + " |"
              for p in result["per_repo"]]
    lines += ["", "## Instances only one run solved", ""]
    for label, ids in result["only_one_resolved"].items():
        shown = ", ".join(ids[:LISTED]) + (f" and {len(ids) - LISTED} more (compare.json lists them)"
                                           if len(ids) > LISTED else "")
        lines.append(f"- {label} ({len(ids)}): " + (shown or "none"))
    lines += ["", "![pass@1 per run and paired differences](compare.png)", "",
              "![pass@1 per repository](compare_repositories.png)"]
    return "\n".join(lines) + "\n"


def figures(result, path):
    """compare.png (pass@1 per run, the paired differences) at path, and compare_repositories.png beside it."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display
    import matplotlib.pyplot as plt

    runs, pairs = result["runs"], result["pairs"]
    fig, (rate_ax, diff_ax) = plt.subplots(1, 2, figsize=(11, 0.45 * max(len(runs), len(pairs)) + 2),
                                           layout="constrained")
    rows = range(len(runs))
    rates = [100 * r["pass@1"] for r in runs]
    # rounding can put a limit a hair inside its estimate (a rate of 1 and an upper limit of 0.9999...)
    errors = [[max(0, 100 * (r["pass@1"] - r["ci95"][0])) for r in runs],
              [max(0, 100 * (r["ci95"][1] - r["pass@1"])) for r in runs]]
    rate_ax.barh(rows, rates, color="#c9d9e8")
    rate_ax.errorbar(rates, rows, xerr=errors, fmt="o", color="#2f6f9f", capsize=4)
    rate_ax.set_yticks(rows, [r["run"] for r in runs])
    rate_ax.set_ylim(len(runs) - 0.5, -0.5)
    rate_ax.set_xlim(0, 104)
    rate_ax.set_xlabel(f"pass@1 (% of {result['shared_instances']} instances, "
                       f"{'resolved' if result['outcome'] == 'resolved' else 'valid patch'}), 95% interval")
    rate_ax.set_title("Each run")
    rows = range(len(pairs))
    diffs = [100 * p["pass@1"]["difference"] for p in pairs]
    errors = [[max(0, 100 * (p["pass@1"]["difference"] - p["pass@1"]["ci95"][0])) for p in pairs],
              [max(0, 100 * (p["pass@1"]["ci95"][1] - p["pass@1"]["difference"])) for p in pairs]]
    colours = ["#777777" if p["pass@1"]["within_noise"] else "#2f6f9f" for p in pairs]
    for row, d, lo, hi, colour in zip(rows, diffs, *errors, colours, strict=True):
        diff_ax.errorbar([d], [row], xerr=[[lo], [hi]], fmt="o", color=colour, capsize=4)
    diff_ax.axvline(0, color="black", linewidth=0.8)
    diff_ax.set_yticks(rows, [f"{p['a']}\n- {p['b']}" for p in pairs], fontsize=8)
    diff_ax.set_ylim(len(pairs) - 0.5, -0.5)
    diff_ax.set_xlabel("difference of pass@1 (points), 95% interval; grey: within noise")
    diff_ax.set_title("Paired differences")
    save(fig, path)
    repos, runs = result["per_repo"], [r["run"] for r in result["runs"]]
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(repos) * len(runs) + 1.5), layout="constrained")
    height = 0.8 / len(runs)
    for j, run in enumerate(runs):
        ax.barh([i + j * height for i in range(len(repos))], [100 * r["pass@1"][run] for r in repos], height,
                label=run)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(repos))],
                  [f"{r['repo']} ({r['instances']})" for r in repos], fontsize=8)
    ax.set_ylim(len(repos) - 0.1, -0.1 - height)
    ax.set_xlim(0, 104)
    ax.set_xlabel("pass@1 (% of the repository's shared instances)")
    ax.set_title("pass@1 per repository")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save(fig, Path(path).with_name("compare_repositories.png"))


def save(fig, path):
    import matplotlib.pyplot as plt

    with open_atomic(path, "wb") as f:  # a killed job leaves no half-written figure
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def default_out_dir(run_dirs):
    """Beside the first run: <its parent>/compare/<run>-vs-<run>..."""
    first = Path(run_dirs[0])
    return first.parent / "compare" / "-vs-".join(Path(d).name for d in run_dirs)


def write(run_dirs, out_dir, validated=False):
    """Read the runs, write out_dir/compare.md, compare.json, compare.png and compare_repositories.png; return
    the comparison."""
    result = compare([read_run(d) for d in run_dirs], validated)
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "compare.json", result)
    write_text_atomic(out_dir / "compare.md", render_markdown(result))
    figures(result, out_dir / "compare.png")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, e.g. results/<run_id>")
    parser.add_argument("--out", help="folder of the report (default: <parent of the first run>/compare/<a>-vs-<b>)")
    parser.add_argument("--validated", action="store_true",
                        help="compare only the instances whose environment the gold patch validated (validate_gold)")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_out_dir(args.run_dirs)
    try:
        write(args.run_dirs, out, args.validated)
    except CompareError as e:
        sys.exit(f"compare: {e}")
    print(out / "compare.md")


if __name__ == "__main__":
    main()
