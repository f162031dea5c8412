"""The report's honest gap: dualmem against the best other learner whose memory bytes are at most its
own (upper bounds aside), paired over seeds; per-learner parts merged; the literature verdicts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from dualmem.core.errors import ParamsError
from dualmem.core.results import Row, TestResults, merge
from dualmem.report import ReportSpec, best_other, literature_verdict, markdown, table_rows
from dualmem.report_supplements import ablation_section
from dualmem.tiny import project_root

SPEC = ReportSpec(["finetune", "joint", "er", "big", "dualmem"], ("dualmem", "finetune"), ["joint"])


def part(name: str, accs: list[float], param_bytes: int, item_bytes: int) -> TestResults:
    result = TestResults("continual", "protocol", [Row("1 Continual", "final_accuracy", "Final average accuracy")])
    for seed, acc in enumerate(accs):
        result.add("final_accuracy", name, seed, acc)
    result.memory[name] = {"params": param_bytes // 4, "param_bytes": param_bytes, "items": 0,
                           "item_bytes": item_bytes}
    return result


def results() -> TestResults:
    return merge([
        part("finetune", [0.20, 0.21, 0.19], 1_000, 0),
        part("joint", [0.97, 0.98, 0.97], 1_000, 40_000_000),  # the oracle: best, but never "best other"
        part("er", [0.90, 0.92, 0.91], 1_000, 4_000),
        part("big", [0.99, 0.99, 0.99], 1_000, 9_000),  # better than dualmem, but with more bytes
        part("dualmem", [0.80, 0.82, 0.81], 1_000, 5_000),
    ])


def test_a_params_change_with_equal_numbers_still_changes_the_results_file(tmp_path, monkeypatch):
    """DVC's run cache skips a stage whose inputs it has seen: if a new experiment's results were the
    bytes of an earlier one's, its report stage (and that pipeline's MLflow report run) would be skipped.
    The results file records the params that produced it; the same params write the same bytes."""
    from dualmem.core.results import results_path

    monkeypatch.chdir(tmp_path)
    written = {}
    for lr in (0.002, 0.003, 0.002):
        part("finetune", [0.2, 0.2], 1_000, 0).save("finetune", {"learners": {"finetune": {"lr": lr}}})
        written.setdefault(lr, set()).add(results_path("continual", "finetune").read_bytes())
    assert len(written[0.002]) == 1 and written[0.002] != written[0.003]
    assert TestResults.load(results_path("continual", "finetune")).values == part("finetune", [0.2, 0.2], 1, 0).values


def test_best_other_respects_bytes_and_upper_bounds():
    merged = results()
    assert best_other(merged, merged.rows[0], SPEC) == "er"
    row = table_rows([merged], SPEC)[0][0]
    assert row.best_gap.against == "er"
    assert round(row.best_gap.summary.mean, 3) == -0.100
    assert row.best_gap.verdict == "dualmem WORSE than er"
    assert row.gap.verdict == "dualmem better"  # the snapshot's gap tells the opposite story


def test_a_learner_over_the_bytes_becomes_eligible_when_dualmem_grows():
    """Positive control for the byte filter: give dualmem more bytes than `big`, and `big` is picked."""
    merged = results()
    merged.memory["dualmem"]["item_bytes"] = 10_000
    assert best_other(merged, merged.rows[0], SPEC) == "big"


def test_merge_keeps_every_learner_and_the_markdown_shows_both_gaps():
    merged = results()
    assert set(merged.values["final_accuracy"]) == {"finetune", "joint", "er", "big", "dualmem"}
    text = markdown([merged], SPEC)
    assert "Gap (dualmem − finetune)" in text and "(vs er)" in text
    assert "| joint (upper bound) |" in text


def test_literature_verdicts():
    assert literature_verdict(0.015, None, 0) == "within 2 points"
    assert literature_verdict(-0.05, None, 0).startswith("differs by -5.0 points")
    assert "published with 1,100 items, ours stores 5,120" in literature_verdict(0.05, 1100, 5120)
    assert "items" not in literature_verdict(0.05, 5000, 5120)


def test_quick_profile_is_the_default_with_fewer_seeds_and_lighter_tests():
    """profiles/quick.yaml must not drift from params.yaml: only its documented keys differ."""
    root = Path(project_root())
    default = yaml.safe_load((root / "params.yaml").read_text())
    quick = yaml.safe_load((root / "profiles" / "quick.yaml").read_text())
    for key, value in (("run.seeds", [0, 1, 2]), ("protocol.openworld.seeds", [0, 1, 2]),
                       ("evaluate_fewshot.episodes", 200), ("evaluate_recall.sizes", [100, 1000, 5000])):
        *path, leaf = key.split(".")
        node_q, node_d = quick, default
        for p in path:
            node_q, node_d = node_q[p], node_d[p]
        assert node_q[leaf] == value, key
        node_q[leaf] = node_d[leaf]
    assert quick == default


def test_reference_profile_is_the_default_with_three_learners():
    """profiles/reference.yaml (`make reference`, timed by `make bench`) is params.yaml but for run.learners."""
    root = Path(project_root())
    default = yaml.safe_load((root / "params.yaml").read_text())
    reference = yaml.safe_load((root / "profiles" / "reference.yaml").read_text())
    assert reference["run"]["learners"] == ["finetune", "joint", "dualmem"]
    reference["run"]["learners"] = default["run"]["learners"]
    assert reference == default


def ablation() -> TestResults:
    rows = [Row("encoder", "final_accuracy", "T1 final accuracy"), Row("memory", "final_accuracy", "T1 final accuracy"),
            Row("memory", "items", "Stored items", False), Row("memory", "memory_bytes", "Memory bytes", False)]
    result = TestResults("ablation", "variants", rows, extra={
        "encoder_variants": ["encoder=consolidated", "encoder=random"],
        "size_variants": ["items=200", "items=500", "items=unbounded"]})
    values = {"encoder=consolidated": 0.95, "encoder=random": 0.90, "items=200": 0.85, "items=500": 0.90,
              "items=unbounded": 0.97}
    sizes = {"items=200": 200, "items=500": 500, "items=unbounded": 50_000}
    for seed in (0, 1):
        for variant, acc in values.items():
            result.add("final_accuracy", variant, seed, acc + seed / 100)
        for variant, items in sizes.items():
            result.add("items", variant, seed, items)
            result.add("memory_bytes", variant, seed, 1_000 + 792 * items)
    return result


def test_the_ablation_tables_show_every_variant_the_main_run_and_clser_at_equal_items():
    text = markdown([results()], SPEC, ablation_section([results()], ablation()))
    assert "| Metric | encoder=consolidated | encoder=random |" in text
    assert "| Metric | items=200 | items=500 | items=unbounded | main run |" in text
    assert "| T1 final accuracy | 0.955 ± 0.064 | 0.905 ± 0.064 |" in text  # mean ± t CI over 2 seeds
    assert "| Stored items | 200 | 500 | 50,000 | 0 |" in text
    assert "| 0.895 | 0.920 | – | – |" in text  # CLS-ER's published 200 / 500 items; none for 50,000 or 0
    assert ablation_section([results()], None) == []  # no ablation stage, no section


def test_the_memory_plot_table_adds_the_dual_memory_at_each_size():
    from dualmem.plot_data import plot_tables

    header, rows = plot_tables([results()], ablation())["memory"]
    assert header == ["learner", "memory_bytes", "final_accuracy"]
    assert ["dualmem[items=500]", 1_000 + 792 * 500, 0.905] in rows
    assert [r[0] for r in rows][:5] == ["finetune", "joint", "er", "big", "dualmem"]


def test_an_upper_bound_run_by_test_6_only_is_allowed_and_a_misspelt_one_is_not(default_params):
    """`run.learners` without joint (a README command) keeps joint the upper bound of Test 6; a name no
    learner list holds fails naming `report.upper_bounds`."""
    params = copy.deepcopy(default_params)
    params["run"]["learners"] = ["finetune", "er", "dualmem"]
    assert ReportSpec.from_params(params).upper_bounds == ["joint"]
    params["report"]["upper_bounds"] = ["jiont"]
    with pytest.raises(ParamsError, match="report.upper_bounds"):
        ReportSpec.from_params(params)
