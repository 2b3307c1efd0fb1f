import itertools
import json
import math
import subprocess
import sys

import pytest

from scripts import compare, summary
from scripts.evaluate import merge

from conftest import LITE_TEST, PROJECT, assert_valid

Z = 1.959963984540054


def wilson_by_hand(x, n):
    """The Wilson limits as the roots of (x/n - p)^2 = z^2 p (1 - p) / n, a quadratic in p."""
    a, b, c = 1 + Z * Z / n, -(2 * x / n + Z * Z / n), (x / n) ** 2
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.unit
def test_pass_at_k_on_small_cases():
    # n=5, c=2: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@3 = 1 - 1/10; pass@4: every
    # 4 of the 5 samples hold a correct one
    assert compare.pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert compare.pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert compare.pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert compare.pass_at_k(5, 2, 4) == 1.0
    assert compare.pass_at_k(3, 0, 2) == 0.0
    assert compare.pass_at_k(3, 3, 1) == 1.0
    # n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert compare.pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    # averaged over instances: (1/3 + 1) / 2 for pass@1, (1 - 1/3 + 1) / 2 for pass@2
    table = compare.pass_at_k_table([[True, False, False], [True, True, True]], [1, 2])
    assert table[1] == pytest.approx(2 / 3) and table[2] == pytest.approx(5 / 6)
    for n, c, k in [(3, 4, 1), (3, 1, 4), (3, 1, 0)]:
        with pytest.raises(ValueError, match="pass@k needs"):
            compare.pass_at_k(n, c, k)


@pytest.mark.unit
def test_wilson_interval():
    for x, n in [(74, 300), (1, 10), (9, 10), (150, 300)]:
        assert compare.wilson(x, n) == pytest.approx(wilson_by_hand(x, n))
    # 0 of 10: the lower limit is 0, the upper z^2 / (n + z^2)
    assert compare.wilson(0, 10) == pytest.approx((0.0, Z * Z / (10 + Z * Z)))
    assert compare.wilson(10, 10) == pytest.approx((10 / (10 + Z * Z), 1.0))
    assert compare.wilson(0, 0) == (0.0, 1.0)


@pytest.mark.unit
def test_mcnemar_exact_p():
    # b=1, c=6: 2 * (C(7,0) + C(7,1)) / 2^7 = 16/128
    assert compare.mcnemar_exact(1, 6) == 0.125
    assert compare.mcnemar_exact(6, 1) == 0.125
    assert compare.mcnemar_exact(0, 5) == 2 / 32
    # b=2, c=10: 2 * (1 + 12 + 66) / 4096
    assert compare.mcnemar_exact(2, 10) == pytest.approx(158 / 4096)
    assert compare.mcnemar_exact(3, 3) == 1.0  # the doubled tail passes 1
    assert compare.mcnemar_exact(0, 0) == 1.0


@pytest.mark.unit
def test_paired_difference_newcombe_interval():
    # 50 pairs: 36 both, 12 only a, 2 only b, 0 neither. p_a = 48/50, p_b = 38/50; AD - BC = -24 < 0, so the
    # correlation is -24 / sqrt(48 * 2 * 38 * 12), uncorrected
    p_a, p_b = 0.96, 0.76
    (l_a, u_a), (l_b, u_b) = wilson_by_hand(48, 50), wilson_by_hand(38, 50)
    phi = -24 / math.sqrt(48 * 2 * 38 * 12)
    lower = 0.2 - math.sqrt((p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2)
    upper = 0.2 + math.sqrt((u_a - p_a) ** 2 - 2 * phi * (u_a - p_a) * (p_b - l_b) + (p_b - l_b) ** 2)
    diff, ci = compare.paired_difference(36, 12, 2, 0)
    assert diff == pytest.approx(0.2)
    assert ci == pytest.approx((lower, upper))
    assert ci == pytest.approx((0.0569, 0.3404), abs=5e-5)  # as Newcombe (1998) gives for this table
    # AD - BC = 14 * 22 - 5 * 0 = 308 > n/2 = 20.5: corrected to 287.5
    phi = 287.5 / math.sqrt(19 * 22 * 14 * 27)
    (l_a, u_a), (l_b, u_b) = wilson_by_hand(19, 41), wilson_by_hand(14, 41)
    p_a, p_b = 19 / 41, 14 / 41
    lower = 5 / 41 - math.sqrt((p_a - l_a) ** 2 - 2 * phi * (p_a - l_a) * (u_b - p_b) + (u_b - p_b) ** 2)
    assert compare.paired_difference(14, 5, 0, 22)[1][0] == pytest.approx(lower)
    # no discordant pair: no difference, an interval around 0
    diff, (lo, hi) = compare.paired_difference(10, 0, 0, 10)
    assert diff == 0 and lo < 0 < hi


@pytest.mark.unit
def test_paired_bootstrap_and_sign_flip_test():
    diff, ci, p = compare.paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0])
    assert (diff, ci, p) == (0.0, (0.0, 0.0), 1.0)
    # three instances, each better in a: the exact sign-flip p is 2/8 (all + or all -)
    diff, ci, p = compare.paired_bootstrap([1, 1, 1], [0, 0, 0])
    assert diff == 1.0 and ci == (1.0, 1.0) and p == pytest.approx(0.25, abs=0.015)
    # 40 instances of pass@1 from 3 samples, a ahead on 20 by 2/3: far beyond noise
    a, b = [1.0] * 20 + [1 / 3] * 20, [1 / 3] * 40
    diff, (lo, hi), p = compare.paired_bootstrap(a, b)
    assert diff == pytest.approx(1 / 3) and 0.2 < lo < diff < hi < 0.47 and p < 0.001
    # the same draws each time: the report does not change between two runs of compare
    assert compare.paired_bootstrap(a, b) == compare.paired_bootstrap(a, b)


def lite_rows(n):
    with open(LITE_TEST, encoding="utf-8") as f:
        return [json.loads(line) for line in itertools.islice(f, n)]


def make_run(results, run_id, rows, samples, cost=0.0, resolved=None, valid=None, repaired=()):
    """A run folder as the workflow writes it. resolved: per sample, the set of resolved ids (then each
    sample has its evaluation.json); valid: per sample, the ids whose patch.json is valid. repaired: ids of
    sample 1 whose repair.json makes the patch valid."""
    run = results / run_id
    run.mkdir(parents=True)
    (run / "instances.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    info = {"run_id": run_id, "model": f"model-{run_id}", "provider": "replay", "cost": {"total_usd": cost},
            **({"samples": samples} if samples > 1 else {})}
    (run / "summary.json").write_text(json.dumps(info))
    (run / "run.json").write_text(json.dumps({k: v for k, v in info.items() if k != "cost"}))
    ids = [row["instance_id"] for row in rows]
    for s in range(1, samples + 1):
        folder = run if s == 1 else run / "samples" / str(s)
        for i in ids:
            instance = compare.instance_sample_dir(run, i, s)
            instance.mkdir(parents=True, exist_ok=True)
            ok = (i in valid[s - 1]) if valid else True
            (instance / "patch.json").write_text(json.dumps(
                {"instance_id": i, "status": "valid" if ok else "invalid", "reason": None if ok else "invalid_diff",
                 "problems": [] if ok else ["hunk 1 does not parse"]}))
            if s == 1 and i in repaired:
                (instance / "repair.json").write_text(json.dumps(
                    {"instance_id": i, "status": "valid", "reason": None, "problems": [], "answer": "repair_1"}))
        if resolved:
            predictions = [{"instance_id": i, "model_name_or_path": run_id, "model_patch": "diff"} for i in ids]
            reports = {i: {"status": "resolved" if i in resolved[s - 1] else "unresolved"} for i in ids}
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "evaluation.json").write_text(json.dumps(merge(rows, predictions, reports, "docker")))
    return run


def run_compare(*args):
    return subprocess.run([sys.executable, "-m", "scripts.compare", *map(str, args)], cwd=PROJECT,
                          capture_output=True, text=True)


@pytest.mark.unit
def test_compare_two_evaluated_runs(tmp_path):
    rows = lite_rows(20)
    ids = [row["instance_id"] for row in rows]
    # both resolve 5, only a 6, only b 1, neither 8: McNemar b=6, c=1
    a = make_run(tmp_path / "results", "a", rows, 1, cost=2.2, resolved=[set(ids[:11])])
    b = make_run(tmp_path / "results", "b", rows, 1, cost=0.6, resolved=[set(ids[:5]) | {ids[11]}])
    done = run_compare(a, b)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "results" / "compare" / "a-vs-b"
    assert done.stdout.strip() == str(out / "compare.md")
    result = json.loads((out / "compare.json").read_text())
    assert_valid(result, "compare")
    assert result["outcome"] == "resolved" and result["shared_instances"] == 20
    run_a, run_b = result["runs"]
    assert (run_a["successes"], run_a["pass@1"], run_b["successes"]) == (11, 0.55, 6)
    assert run_a["ci95"] == pytest.approx(wilson_by_hand(11, 20))
    assert run_a["cost_per_success_usd"] == pytest.approx(0.2) and run_b["cost_per_success_usd"] == pytest.approx(0.1)
    pair = result["pairs"][0]["pass@1"]
    assert (pair["only_a"], pair["only_b"], pair["both"], pair["neither"]) == (6, 1, 5, 8)
    assert pair["p"] == 0.125 and pair["test"] == "McNemar exact"
    assert pair["difference"] == pytest.approx(0.25)
    assert pair["ci95"] == pytest.approx(compare.paired_difference(5, 6, 1, 8)[1])
    assert pair["within_noise"] is (pair["ci95"][0] <= 0)
    assert result["only_one_resolved"] == {"a": ids[5:11], "b": [ids[11]]}
    repos = {r["repo"]: r for r in result["per_repo"]}
    repo = rows[0]["repo"]
    n = sum(row["repo"] == repo for row in rows)
    assert repos[repo]["instances"] == n
    assert repos[repo]["pass@1"]["a"] == pytest.approx(sum(row["repo"] == repo for row in rows[:11]) / n)
    md = (out / "compare.md").read_text()
    assert "resolved by the SWE-bench harness" in md and "p = 0.125, McNemar exact" in md
    assert ("within noise" in md) is pair["within_noise"]
    for name in ("compare.png", "compare_repositories.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.unit
def test_a_clear_difference_is_reported_beyond_noise(tmp_path):
    rows = lite_rows(60)
    ids = [row["instance_id"] for row in rows]
    a = make_run(tmp_path, "strong", rows, 1, resolved=[set(ids[:40])])
    b = make_run(tmp_path, "weak", rows, 1, resolved=[set(ids[:10])])
    result = compare.write([a, b], tmp_path / "report")
    pair = result["pairs"][0]["pass@1"]
    assert pair["p"] == pytest.approx(2 / 2 ** 30) and not pair["within_noise"] and pair["ci95"][0] > 0
    md = (tmp_path / "report" / "compare.md").read_text()
    assert "**strong is better** beyond noise" in md and "within noise" not in md
    assert result["runs"][0]["cost_per_success_usd"] == 0.0


@pytest.mark.unit
def test_cost_is_unknown_for_given_predictions_and_unpriced_answers(tmp_path):
    rows = lite_rows(4)
    ids = [row["instance_id"] for row in rows]
    a = make_run(tmp_path, "a", rows, 1, cost=0.0, resolved=[set(ids[:2])])
    b = make_run(tmp_path, "b", rows, 1, cost=0.3, resolved=[set(ids[:1])])
    c = make_run(tmp_path, "c", rows, 1, cost=0.3, resolved=[set(ids[:1])])
    summary_a = json.loads((a / "summary.json").read_text())
    (a / "summary.json").write_text(json.dumps({**summary_a, "mode": "predictions"}))
    summary_c = json.loads((c / "summary.json").read_text())
    (c / "summary.json").write_text(json.dumps({**summary_c, "cost": {"total_usd": 0.3,
                                                                      "unknown_cost_instances": [ids[0]]}}))
    result = compare.write([a, b, c], tmp_path / "report")
    assert [(r["cost_usd"], r["cost_per_success_usd"]) for r in result["runs"]] == [(None, None), (0.3, 0.3),
                                                                                     (None, None)]
    assert len(result["pairs"]) == 3
    assert "| a | model-a | 1 | 50.0% (2/4) | " in (tmp_path / "report" / "compare.md").read_text()


@pytest.mark.unit
def test_compare_runs_with_samples(tmp_path):
    rows = lite_rows(30)
    ids = [row["instance_id"] for row in rows]
    # a: sample 1 resolves the first 10, samples 2 and 3 the first 20; b: every sample the first 10
    a = make_run(tmp_path, "a", rows, 3, resolved=[set(ids[:10]), set(ids[:20]), set(ids[:20])])
    b = make_run(tmp_path, "b", rows, 3, resolved=[set(ids[:10])] * 3)
    result = compare.write([a, b], tmp_path / "report")
    assert_valid(json.loads((tmp_path / "report" / "compare.json").read_text()), "compare")
    run_a, run_b = result["runs"]
    # per instance: 10 at 3/3, 10 at 2/3, 10 at 0/3
    assert run_a["pass@1"] == pytest.approx((10 + 10 * 2 / 3) / 30)
    values = [1.0] * 10 + [2 / 3] * 10 + [0.0] * 10
    mean = sum(values) / 30
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / 29 / 30)
    assert run_a["se"] == pytest.approx(se)
    assert run_a["per_sample"] == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    # pass@2 of an instance with 2 of 3: 1 - C(1,2)/C(3,2) = 1; pass@3: 1
    assert run_a["pass@k"] == pytest.approx({"1": mean, "2": 20 / 30, "3": 20 / 30})
    assert run_b["pass@k"] == pytest.approx({"1": 1 / 3, "2": 1 / 3, "3": 1 / 3}) and run_b["se"] > 0
    pair = result["pairs"][0]
    assert pair["pass@1"]["difference"] == pytest.approx(mean - 1 / 3)
    assert pair["pass@3"]["difference"] == pytest.approx(1 / 3)
    # 10 instances differ, all one way: the exact sign-flip p is 2 / 2^10
    assert pair["pass@3"]["test"] == "paired sign-flip randomisation"
    assert pair["pass@3"]["p"] == pytest.approx(2 / 1024, abs=0.001)
    assert not pair["pass@3"]["within_noise"]
    assert result["only_one_resolved"] == {"a": ids[10:20], "b": []}
    md = (tmp_path / "report" / "compare.md").read_text()
    assert "## pass@k" in md and "| a | 55.6% | 66.7% | 66.7% |" in md


@pytest.mark.unit
def test_unevaluated_runs_compare_patch_validity(tmp_path):
    rows = lite_rows(10)
    ids = [row["instance_id"] for row in rows]
    # the repair stage's verdict is the final one: ids[9]'s invalid patch was mended
    a = make_run(tmp_path, "a", rows, 1, valid=[set(ids[:6])], repaired={ids[9]})
    b = make_run(tmp_path, "b", rows[:8], 1, valid=[set(ids[:3])])  # b selected 8 of them
    result = compare.write([a, b], tmp_path / "report")
    assert result["outcome"] == "valid patch" and result["shared_instances"] == 8
    assert [r["successes"] for r in result["runs"]] == [6, 3]
    assert [r["selected"] for r in result["runs"]] == [10, 8]
    assert result["only_one_resolved"]["a"] == ids[3:6]
    md = (tmp_path / "report" / "compare.md").read_text()
    assert "the outcome is patch validity, not resolution" in md


@pytest.mark.unit
@pytest.mark.parametrize("case, message", [
    ("one run", "compare needs two or more run folders, got 1"),
    ("no shared instance", "the runs share no instance"),
    ("not a run folder", "is not a run folder: it has no instances.jsonl"),
    ("evaluated and not", "some runs were evaluated and some were not"),
    ("samples not all evaluated", "has evaluations of some samples but not of"),
    ("the same run twice", "the same run folder is given twice"),
])
def test_compare_errors(tmp_path, case, message):
    rows = lite_rows(6)
    ids = [row["instance_id"] for row in rows]
    a = make_run(tmp_path, "a", rows[:3], 1, resolved=[set(ids[:1])])
    runs = {
        "one run": lambda: [a],
        "no shared instance": lambda: [a, make_run(tmp_path, "b", rows[3:], 1, resolved=[set()])],
        "not a run folder": lambda: [a, tmp_path / "nothing"],
        "evaluated and not": lambda: [a, make_run(tmp_path, "b", rows, 1, valid=[set(ids)])],
        "samples not all evaluated": lambda: [a, make_run(tmp_path, "b", rows, 2, resolved=[set(ids), set(ids)])],
        "the same run twice": lambda: [a, tmp_path / "a" / ".." / "a"],
    }[case]()
    if case == "samples not all evaluated":
        (runs[1] / "samples" / "2" / "evaluation.json").unlink()
    done = run_compare(*runs, "--out", tmp_path / "report")
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert done.stderr.startswith("compare: ") and "Traceback" not in done.stderr
    assert not (tmp_path / "report").exists()


@pytest.mark.unit
def test_summary_gives_pass_at_k_of_a_run_with_samples(tmp_path):
    rows = lite_rows(12)
    ids = [row["instance_id"] for row in rows]
    run = make_run(tmp_path, "r", rows, 3, valid=[set(ids[:6]), set(ids[:3]), set()])
    run_info = {"run_id": "r", "mode": "generate", "dataset": "lite", "split": "test", "provider": "replay",
                "model": "m", "context": "none", "evaluation": "none", "samples": 3}
    record = summary.summarise(rows, [], run, run_info)
    assert_valid(record, "summary")
    stats = record["samples_pass_at_k"]
    assert stats["outcome"] == "valid patch" and stats["overall"]["pass@1"] == pytest.approx((6 + 3) / 36)
    # 3 instances at 2/3, 3 at 1/3: pass@2 = (3 * 1 + 3 * (1 - C(2,2)/C(3,2))) / 12
    assert stats["overall"]["pass@k"] == pytest.approx({"1": 9 / 36, "2": (3 + 3 * 2 / 3) / 12, "3": 6 / 12})
    by_repo = {r["repo"]: r for r in stats["per_repo"]}
    assert sum(r["instances"] for r in by_repo.values()) == 12
    md = summary.render_markdown(record)
    assert "## pass@k over 3 samples" in md and "| all | 12 | 25.0% ± " in md
    # one sample: no such section
    one = summary.summarise(rows, [], run, {**run_info, "samples": 1})
    assert one["samples_pass_at_k"] is None and "pass@k" not in summary.render_markdown(one)


@pytest.mark.workflow
def test_compare_reads_the_runs_the_workflow_writes(tmp_path):
    """Runs made by the real snakemake on real Lite rows (not evaluated): the reference patches, replayed
    answers of a 7B model, and a real submission's predictions given its official verdicts."""
    from conftest import DATA, read_rows, snakemake, write_rows

    replay_file = DATA / "preds_oracle_acecoder-qwen2.5-coder-7b_litesubset.jsonl"
    lite = {r["instance_id"]: r for r in read_rows(LITE_TEST)}
    rows = [lite[a["instance_id"]] for a in read_rows(replay_file)[:8]]
    ids = [row["instance_id"] for row in rows]
    dataset = write_rows(tmp_path / "sample.jsonl", rows)
    moatless = [p for p in read_rows(DATA / "preds_20240617_moatless_gpt4o.jsonl") if p["instance_id"] in ids]
    given = write_rows(tmp_path / "moatless.jsonl", moatless)
    snakemake(tmp_path, "--config", f"dataset={dataset}", "run_id=gold")
    snakemake(tmp_path, "--config", f"dataset={dataset}", "provider=replay", f"replay_file={replay_file}",
              "run_id=small")
    snakemake(tmp_path, "--config", f"dataset={dataset}", f"predictions={given}", "run_id=moatless")
    results = tmp_path / "results"

    # not evaluated: the outcome is the patch stage's verdict
    result = compare.write([results / "gold", results / "small"], tmp_path / "validity")
    valid = {i for i in ids if json.loads((results / "small" / "instances" / i / "patch.json").read_text())["status"]
             == "valid"}
    assert result["outcome"] == "valid patch" and result["shared_instances"] == 8
    assert [r["successes"] for r in result["runs"]] == [8, len(valid)]
    assert len(valid) == json.loads((results / "small" / "summary.json").read_text())["counts"]["patch"]["valid"]
    pair = result["pairs"][0]["pass@1"]
    assert (pair["only_a"], pair["only_b"]) == (8 - len(valid), 0)
    assert pair["p"] == compare.mcnemar_exact(8 - len(valid), 0)
    assert result["only_one_resolved"]["gold"] == sorted(set(ids) - valid)

    # the official verdicts, written as the harness's report: the outcome is resolution
    official = json.loads((DATA / "results_20240617_moatless_gpt4o.json").read_text())
    for run, verdicts in [("moatless", ["--results", DATA / "results_20240617_moatless_gpt4o.json"]),
                          ("gold", ["--all-resolved"])]:
        done = subprocess.run([sys.executable, "benchmarks/official_verdicts.py", results / run, *verdicts],
                              cwd=PROJECT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        evaluation = json.loads((results / run / "evaluation.json").read_text())
        # the harness's report format; its backend names where the verdicts came from, no engine of this project
        assert evaluation["backend"].startswith("not evaluated here: ")
        assert_valid({**evaluation, "backend": "docker"}, "evaluation")
    done = run_compare(results / "moatless", results / "gold")
    assert done.returncode == 0, done.stderr
    result = json.loads((results / "compare" / "moatless-vs-gold" / "compare.json").read_text())
    assert_valid(result, "compare")
    resolved = sorted(set(ids) & set(official["resolved"]))
    assert result["outcome"] == "resolved" and result["runs"][0]["successes"] == len(resolved)
    assert result["runs"][0]["cost_usd"] is None  # given predictions: their cost is not known
    assert result["only_one_resolved"] == {"moatless": [], "gold": sorted(set(ids) - set(resolved))}


@pytest.mark.unit
def test_compare_validated_leaves_out_the_environments_broken_here(tmp_path):
    rows = lite_rows(6)
    ids = [row["instance_id"] for row in rows]
    a = make_run(tmp_path, "a", rows, 1, resolved=[set(ids[:3])])
    b = make_run(tmp_path, "b", rows, 1, resolved=[set(ids[2:4])])
    lacking = run_compare(a, b, "--validated", "--out", tmp_path / "report")
    assert lacking.returncode == 1 and "lack(s) a gold validation" in lacking.stderr
    assert "validate_gold=true" in lacking.stderr and not (tmp_path / "report").exists()
    broken = {ids[0], ids[3]}  # ids[3]'s environment broken in run b alone: left out all the same
    for run in (a, b):
        for i in ids:
            (run / "instances" / i / "validation.json").write_text(json.dumps(
                {"validated": i not in broken and not (run == a and i == ids[3])}))
    done = run_compare(a, b, "--validated", "--out", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "report" / "compare.json").read_text())
    assert_valid(result, "compare")
    assert result["validated_only"] is True and result["environment_broken"] == sorted(broken)
    assert result["shared_instances"] == 4
    assert [r["successes"] for r in result["runs"]] == [2, 1]  # a: ids[1], ids[2]; b: ids[2]
    assert f"Left out, environment broken here (2): {', '.join(sorted(broken))}" in (
        tmp_path / "report" / "compare.md").read_text()
    # without --validated every shared instance counts
    assert compare.write([a, b], tmp_path / "all")["shared_instances"] == 6
