"""The summary (table, verdicts, plot, README section) from a results file; the numbers here are synthetic and
only exercise the formatting and the arithmetic."""

from __future__ import annotations

import json

import pytest

from benchmarks import summary


def _records() -> list[dict]:
    g0 = summary.default_gamma("digits")  # the table's rows are at the preset's γ
    recs = []
    for seed, (acc_s, acc_u) in enumerate([(0.98, 0.95), (0.97, 0.99)]):
        base = {"dataset": "digits", "seed": seed, "gamma": None, "bits": None}
        recs.append({**base, "key": f"digits/s{seed}/float", "method": "float", "seconds": 3.0,
                     "cpu_seconds": 3.0,
                     "weights": 1000})
        recs.append({**base, "key": f"digits/s{seed}/ptq", "method": "ptq", "seconds": {"ptq-int8": 0.1},
                     "cpu_seconds": {"ptq-int8": 0.1}, "onnx": {
                         "float": {"file_bytes": 40000, "test_accuracy": 0.98, "preservation_accuracy": 1.0,
                                   "weight_bits": 32000, "weights_quantized": 0, "weights_counted": 1000},
                         "ptq-int8": {"file_bytes": 12000, "test_accuracy": 0.975,
                                      "preservation_accuracy": 1.0,
                                      "weight_bits": 8000, "weights_quantized": 1000,
                                      "weights_counted": 1000}}})
        for method, acc in (("sgsc", acc_s), ("lambda0", acc_u)):
            recs.append({**base, "key": f"digits/s{seed}/{method}-g{g0}", "method": method, "gamma": g0,
                         "seconds": 30.0, "cpu_seconds": 30.0, "stored_bits": 600, "onnx": {
                             "portable": {"file_bytes": 2100, "test_accuracy": acc,
                                          "preservation_accuracy": 1.0},
                             "compact": {"file_bytes": 1900, "test_accuracy": acc,
                                         "preservation_accuracy": 1.0}}})
    return recs


def test_summary_table_verdicts_plot_and_readme(tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "RESULTS", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{summary.BEGIN}\nold\n{summary.END}\nafter\n")
    monkeypatch.setattr(summary, "README", readme)
    (tmp_path / "bench_t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records()))
    text = summary.write_summary("t", readme=True)
    assert "| float32 reference | 2 | 98.00 ± 0.00 |" in text
    assert "| **SGSC, compact** | 2 | 97.50 ± 0.71 |" in text
    assert "8.000 (25.0 %) | 12,000 | 0.300 |" in text  # PTQ INT8: 8 bits per weight, file 0.3 of float
    assert "0.600 (1.9 %) | 1,900 | 0.048 |" in text  # SGSC: 600 bits over 1000 weights
    assert "accuracy ≥ its 97.50 %: **met**" in text
    assert "within 0.5 pp of float (98.00 %): **met**" in text  # 97.5 ≥ 98.0 − 0.5
    assert "SGSC 0.71 pp vs λ = 0 2.83 pp (2 and 2 seeds; ratio 0.25, 90 % interval" in text
    assert "(F test)): **met** (no larger)" in text
    assert "paired by seed, compact − PTQ = " in text and "± 0.71 pp over 2 seeds, 90 % interval" in text
    assert (tmp_path / "bench_t_pareto.png").stat().st_size > 10_000
    new = readme.read_text()
    assert "old" not in new and new.startswith("# x\n\nbefore\n") and new.endswith(f"{summary.END}\nafter\n")


def test_language_model_verdicts_use_loss_lower_is_better():
    def s(loss, loss_std, size, n=5):
        return {"test_loss": (loss, loss_std), "file_bytes": (size, 0.0), "n": n}

    stats = {"float": s(1.96, 0.01, 800_000), "ptq-int8": s(2.10, 0.02, 300_000),
             "sgsc:portable": s(1.99, 0.004, 90_000), "lambda0:portable": s(1.98, 0.006, 85_000)}
    v = summary.verdicts(stats, "names")
    assert len(v) == 2  # the 1/6-size target is stated for the image tasks only
    assert "test loss ≤ its loss 2.1000: **met** (portable loss 1.9900 at 90,000 B)" in v[0]
    assert "SGSC 0.0040 nats vs λ = 0 0.0060 nats (5 and 5 seeds; ratio 0.67" in v[1] and "**met**" in v[1]
    stats["sgsc:portable"] = s(2.2, 0.01, 90_000)
    assert "**not met**" in summary.verdicts(stats, "names")[0]
    assert "**not met** (larger)" in summary.verdicts(stats, "names")[1]


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10, 90.0), (20, 95.0), (15, 89.0), (30, 95.0), (40, 97.0), (10, 91.0)]
    assert summary.pareto_front(pts) == [(10, 91.0), (20, 95.0), (40, 97.0)]
    front = summary.pareto_front([(10, 2.0), (20, 1.5), (30, 1.7)], lower_is_better=True)
    assert front == [(10, 2.0), (20, 1.5)]


def test_paired_difference_and_std_ratio_interval():
    assert summary.paired({0: 0.9, 1: 0.8, 2: 0.7}, {0: 0.8, 1: 0.8}) == pytest.approx(
        (0.05, 0.0707107, 2), rel=1e-5)
    lo, hi = summary.mean_interval(1.0, 2.0, 5)  # t(4) 95 % point 2.1318; 2.1318 · 2 / √5 = 1.9068
    assert (lo, hi) == (pytest.approx(-0.9068, abs=1e-3), pytest.approx(2.9068, abs=1e-3))
    lo, hi = summary.std_ratio_interval(1.0, 5, 1.0, 5)  # F(4, 4): 5 % and 95 % points 0.1565 and 6.388
    assert (lo, hi) == (pytest.approx(0.3957, abs=1e-3), pytest.approx(2.527, abs=1e-3))


def _sel(gamma, seed, acc, size):
    return {"dataset": "digits", "method": "sgsc:compact", "gamma": gamma, "seed": seed, "test_accuracy": acc,
            "file_bytes": size, "stored_bits": size, "weights": 1000}


def test_select_setting_takes_the_best_mean_validation_metric_and_ties_go_to_the_larger_gamma():
    pts = [_sel(0.1, 0, 0.99, 900), _sel(0.1, 1, 0.97, 900), _sel(0.3, 0, 0.98, 500), _sel(0.3, 1, 0.98, 500),
           _sel(0.5, 0, 0.96, 400), _sel(0.5, 1, 0.97, 400)]
    chosen, rows = summary.select_setting(pts, "digits")
    assert chosen == (0.3, 1.0) and [r["gamma"] for r in rows] == [0.1, 0.3, 0.5]  # λ: the digits preset's
    assert rows[0]["metric"] == pytest.approx(0.98) and rows[2]["file_bytes"] == 400
    assert "| **0.3** | **1** | 2 | 98.00 ± 0.00 | 0.500 | 500 |" in summary.selection(pts, "digits")
    with pytest.raises(summary.IncompleteSuite, match="different seeds"):
        summary.select_setting(pts[:-1], "digits")


def test_select_setting_keeps_an_image_task_inside_the_size_budget_of_one_sixth_of_ptq_int8():
    # budget 500
    ptq = [{"dataset": "digits", "method": "ptq-int8", "seed": s, "file_bytes": 3000} for s in (0, 1)]
    pts = [_sel(0.1, 0, 0.99, 900), _sel(0.1, 1, 0.99, 900), _sel(0.3, 0, 0.97, 500), _sel(0.3, 1, 0.98, 500),
           _sel(0.5, 0, 0.96, 400), _sel(0.5, 1, 0.97, 400)]
    assert summary.size_budget(pts + ptq, "digits") == pytest.approx(500)
    chosen, rows = summary.select_setting(pts + ptq, "digits")
    # 0.1 is best but too big
    assert chosen == (0.3, 1.0) and [r["fits"] for r in rows] == [False, True, True]
    text = summary.selection(pts + ptq, "digits")
    assert "| 0.1 | 1 | 2 | 99.00 ± 0.00 | 0.900 | 900 (over budget) |" in text
    assert "Size budget: 500 B (1/6 of PTQ INT8's 3,000 B). Chosen: **γ = 0.3" in text
    small_ptq = [{**p, "file_bytes": 600} for p in ptq]  # budget 100: nothing fits, so the budget is ignored
    assert summary.select_setting(pts + small_ptq, "digits")[0] == (0.1, 1.0)
    assert "no setting fits it, so it is ignored" in summary.selection(pts + small_ptq, "digits")
    assert summary.select_setting(pts, "digits")[0] == (0.1, 1.0)  # no PTQ file: no budget
    assert "No size budget (no PTQ INT8 file measured)" in summary.selection(pts, "digits")


def test_a_stopped_select_run_is_a_one_line_error_with_exit_code_2(tmp_path, monkeypatch, capsys):
    from benchmarks import run

    monkeypatch.setattr(summary, "RESULTS", tmp_path)
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    recs = [r for r in _records() if r["method"] in ("float", "sgsc")]
    recs.append({**recs[-1], "key": "digits/s1/sgsc-g9.0", "gamma": 9.0})  # a second γ, on seed 1 only
    (tmp_path / "bench_select.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert run.main(["--suite", "select", "--summary-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot summarise suite select: digits: "
                          "the settings were run on different seeds")
    assert "\n" not in err and not (tmp_path / "bench_select.md").exists()


def test_select_setting_for_a_language_model_takes_the_lowest_loss_over_gamma_and_lambda():
    def lm(gamma, lam, seed, loss):
        return {"dataset": "names", "method": "sgsc:compact", "gamma": gamma, "lam": lam, "seed": seed,
                "test_loss": loss, "file_bytes": 1000, "stored_bits": 1000, "weights": 1000}

    pts = [lm(0.05, None, 0, 2.00), lm(0.05, None, 1, 2.02), lm(0.05, 1.0, 0, 2.05), lm(0.05, 1.0, 1, 2.05),
           lm(0.1, None, 0, 1.99), lm(0.1, None, 1, 2.00)]
    chosen, rows = summary.select_setting(pts, "names")
    assert chosen == (0.1, 0.1)  # None: the preset's λ (0.1 for names)
    assert {(r["gamma"], r["lam"]) for r in rows} == {(0.05, 0.1), (0.05, 1.0), (0.1, 0.1)}


def test_time_budget_is_stated_only_for_one_fresh_invocation():
    run = {"command": "python -m benchmarks.run --suite full --fresh", "wall_seconds": 5100.0,
           "units_seconds": 5010.0, "latency_seconds": 90.0, "jobs": 2, "cpus": 2}
    assert "85.0 min wall" in summary.time_budget("full", [run])
    assert "within it by 5.0 min" in summary.time_budget("full", [run])
    assert "over it by 5.0 min" in summary.time_budget("full", [run | {"wall_seconds": 5700.0}])
    # a rerun that redid part of the suite is no from-scratch measurement, nor is a sum of walls
    rerun = run | {"command": "python -m benchmarks.run --suite full"}
    assert "not measured" in summary.time_budget("full", [run, rerun])
    assert "not measured" in summary.time_budget("full", [rerun])
    assert summary.time_budget("seeds", [run]) == "" and summary.time_budget("full", []) == ""
