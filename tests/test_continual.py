"""Sequential stages: the `stages:` schema, chained checkpoint keys, the sequential suites, and the
continual-learning measures (accuracy matrix, BWT/FWT/retention, normalised curves, the paired
SDFT-vs-SFT test on BWT and its claim row) with their report pieces."""

import math
from pathlib import Path

import numpy as np
import pytest

from harness import claims as C
from harness import continual as CL
from harness import metrics as M
from harness.errors import ConfigError
from harness.report import continual as RC
from harness.stages import parse_stages, stage_chain_keys, stage_config
from harness.suite import ArmSpec, Suite, read_mapping, resolve_relative
from harness.tasks.base import load_selection
from harness.tasks.registry import get_task

ROOT = Path(__file__).resolve().parent.parent
SUITES = ["sequential-quick", "paper-sequential", "ci-tiny-sequential"]


# --- formulas on a hand-computed matrix -----------------------------------------------------

A3 = [[0.8, 0.6, 0.5],
      [0.2, 0.7, 0.4],
      [0.1, 0.3, 0.9]]
B3 = [0.1, 0.2, 0.2]


def test_bwt_fwt_retention_on_a_hand_computed_matrix():
    # BWT = ((0.5 - 0.8) + (0.4 - 0.7)) / 2; FWT = ((0.2 - 0.2) + (0.3 - 0.2)) / 2
    assert CL.bwt(A3) == pytest.approx(-0.3)
    assert CL.fwt(A3, B3) == pytest.approx(0.05)
    assert CL.retention(A3) == pytest.approx([0.5 / 0.8, 0.4 / 0.7])


def test_one_task_has_no_transfer_and_zero_own_accuracy_has_no_retention():
    assert math.isnan(CL.bwt([[0.5]])) and math.isnan(CL.fwt([[0.5]], [0.1])) and CL.retention([[0.5]]) == []
    assert CL.retention([[0.0, 0.2], [0.1, 0.5]]) == [None]


def _data(cells: dict, tasks=("tool", "sci"), **kw) -> CL.SequenceOutcomes:
    """cells: {(method, seed, task, stage): string of 0/1 per item}."""
    out: dict = {}
    for (m, s, t, j), bits in cells.items():
        out.setdefault(m, {}).setdefault(s, {})[(t, j)] = {f"{t}{k}": int(b) for k, b in enumerate(bits)}
    return CL.SequenceOutcomes(tasks, out, **kw)


def _one_seed(method="sft", tool=("0001", "1111", "0111"), sci=("0000", "0100", "1100")):
    """tool use and science at stages -1, 0, 1 (4 items each)."""
    return {(method, 0, t, j): bits for t, row in (("tool", tool), ("sci", sci)) for j, bits in zip((-1, 0, 1), row)}


def test_transfer_from_per_item_outcomes_matches_the_hand_computation():
    d = _data(_one_seed())
    # A = [[1, .75], [.25, .5]], b = [.25, 0]: BWT = .75 - 1, FWT = .25 - 0, retention .75 / 1
    tr = CL.transfer(d, "sft", n_boot=2000)
    assert tr.bwt.value == pytest.approx(-0.25) and tr.fwt.value == pytest.approx(0.25)
    assert tr.retention == {"tool": pytest.approx(0.75)}
    assert tr.bwt.interval == "paired bootstrap, items" and tr.bwt.lo <= -0.25 <= tr.bwt.hi
    cells = CL.accuracy_matrix(d, "sft")
    c = cells[("tool", 1)]
    assert (c.acc, c.n_items, c.n_seeds) == (0.75, 4, 1)
    assert (c.lo, c.hi) == pytest.approx(M.wilson_interval(3, 4))


def test_several_seeds_use_the_across_seed_interval():
    cells = _one_seed() | {k[:1] + (1,) + k[2:]: v for k, v in _one_seed(tool=("0001", "1110", "0011")).items()}
    d = _data(cells)
    c = CL.accuracy_matrix(d, "sft")[("tool", 1)]
    assert c.acc == pytest.approx(0.625) and c.interval == "across seeds, t"
    assert (c.lo, c.hi) == pytest.approx(M.seed_ci([0.75, 0.5])[1:])
    tr = CL.transfer(d, "sft")
    # seed 0: .75 - 1; seed 1: .5 - .75
    assert tr.bwt.per_seed == {0: pytest.approx(-0.25), 1: pytest.approx(-0.25)}
    assert tr.bwt.interval == "across seeds, t"


def test_outcomes_must_be_paired_by_item_and_binary():
    cells = _one_seed()
    cells[("sft", 0, "tool", 1)] = "011"
    with pytest.raises(ValueError, match="paired by item"):
        _data(cells)
    with pytest.raises(ValueError, match="0/1"):
        CL.SequenceOutcomes(("tool",), {"sft": {0: {("tool", 0): {"a": 0.5}}}})
    with pytest.raises(ValueError, match="stage in -1..1"):
        _data({("sft", 0, "tool", 2): "01"})


def test_missing_base_leaves_fwt_undefined_with_a_note():
    cells = {k: v for k, v in _one_seed().items() if k[3] != -1}
    tr = CL.transfer(_data(cells), "sft")
    assert math.isnan(tr.fwt.value) and "base" in tr.fwt.note
    assert tr.bwt.value == pytest.approx(-0.25)


# --- normalised curves ------------------------------------------------------------------------

def test_normalised_curves_scale_base_to_zero_and_the_best_method_to_one():
    d = _data(_one_seed("sft") | _one_seed("sdft", tool=("0001", "0111", "0111"), sci=("0000", "1000", "1110")))
    n = CL.normalised_curves(d)
    # tool: base .25, best 1.0 (SFT after stage 1); sci: base 0, best .75 (SDFT after stage 2)
    assert n.values["sft"]["tool"] == pytest.approx([0, 1, (0.75 - 0.25) / 0.75])
    assert n.values["sdft"]["sci"] == pytest.approx([0, 0.25 / 0.75, 1])
    assert n.undefined == {}


def test_normalisation_says_why_instead_of_dividing_by_zero():
    d = _data(_one_seed(sci=("1100", "0100", "1000")))  # science never beats its base (50%)
    n = CL.normalised_curves(d)
    assert "no method exceeded the base accuracy (50.0%" in n.undefined["sci"]
    assert n.values["sft"]["sci"] == [None, None, None]
    assert n.values["sft"]["tool"][1] == pytest.approx(1.0)
    assert RC.fig_normalised(d)[:4] == b"\x89PNG"


# --- the paired test on BWT and the claim row -------------------------------------------------

def test_compare_bwt_is_the_difference_of_the_methods_bwt_with_mcnemar_on_forgetting():
    # SFT forgets items 1 and 2 of tool use; SDFT forgets none and gains item 0
    d = _data(_one_seed("sft", tool=("0001", "1111", "1001"))
              | _one_seed("sdft", tool=("0001", "0111", "1111")))
    c = CL.compare_bwt(d, n_boot=2000)
    assert c["bwt_ref"] == pytest.approx(-0.5) and c["bwt_arm"] == pytest.approx(0.25)
    assert c["diff"] == pytest.approx(0.75) and c["n_items"] == 4
    assert c["mcnemar"] == {"n01": 0, "n10": 2, "p": pytest.approx(0.5)}
    row = CL.retention_claim(d, n_boot=2000)
    assert set(row) == set(C._row("x", "", "", "pp", ""))
    assert row["id"] == "c-retain" and row["claim"].startswith("SDFT retains earlier skills better than SFT")
    assert row["measured"] == pytest.approx(0.75) and row["verdict"] in C.VERDICTS
    assert "sft only 2" in row["note"] and row["mde"] > 0


def test_a_direction_needs_the_exact_test_too():
    """The sequential-quick run's shape: 30 items, SDFT forgets 5 that SFT keeps and SFT forgets none.
    The percentile bootstrap interval of the difference excludes 0, but the exact McNemar test on
    5 discordant items cannot reject (p = 0.0625): no direction may be claimed."""
    right, forgot = "1" * 30, "0" * 5 + "1" * 25
    base = "0" * 30
    d = _data({("sft", 0, "tool", -1): base, ("sft", 0, "tool", 0): right, ("sft", 0, "tool", 1): right,
               ("sdft", 0, "tool", -1): base, ("sdft", 0, "tool", 0): right, ("sdft", 0, "tool", 1): forgot,
               ("sft", 0, "sci", -1): base, ("sft", 0, "sci", 0): base, ("sft", 0, "sci", 1): base,
               ("sdft", 0, "sci", -1): base, ("sdft", 0, "sci", 0): base, ("sdft", 0, "sci", 1): base})
    c = CL.compare_bwt(d, n_boot=4000)
    assert c["hi"] < 0 and c["mcnemar"]["p"] == pytest.approx(0.0625)
    row = CL.retention_claim(d, n_boot=4000)
    assert row["verdict"] == C.INCONCLUSIVE and "exact McNemar test does not reject" in row["note"]


def test_claim_is_not_measured_without_both_methods():
    row = CL.retention_claim(_data(_one_seed("sft")))
    assert row["verdict"] == C.NOT_MEASURED and "needs sft and sdft" in row["note"]


def _simulate(rng, n, forget_sft, forget_sdft, seeds=(0,), seed_sd=0.0):
    """Two tasks; every item's difficulty is shared by both methods (so outcomes are correlated, as
    on a real test set). Stage 0 learns tool use; stage 1 (science) forgets a right item with
    probability forget_* (varying by seed with sd seed_sd) and recovers a wrong one with 0.05."""
    learn = np.clip(rng.beta(2, 1.5, n), 0, 1)
    cells = {}
    for m, f in (("sft", forget_sft), ("sdft", forget_sdft)):
        for s in seeds:
            fs = float(np.clip(f + rng.normal(0, seed_sd), 0, 1))
            y0 = rng.random(n) < learn
            y1 = np.where(y0, rng.random(n) >= fs, rng.random(n) < 0.05)
            sci = rng.random(n) < 0.5
            for t, j, y in (("tool", -1, rng.random(n) < 0.2), ("tool", 0, y0), ("tool", 1, y1),
                            ("sci", -1, sci), ("sci", 0, sci), ("sci", 1, rng.random(n) < 0.7)):
                cells[(m, s, t, j)] = "".join("1" if v else "0" for v in y)
    return _data(cells)


def _verdicts(n_sims, **kw):
    rng = np.random.default_rng(12345)
    return [CL.retention_claim(_simulate(rng, **kw), n_boot=1000, seed=k)["verdict"] for k in range(n_sims)]


def test_simulation_finds_that_sft_forgets_more_at_a_reasonable_n():
    # true BWT difference: learnt share ~0.57 x (0.40 - 0.10) ~ +17 pp for SDFT
    v = _verdicts(100, n=200, forget_sft=0.4, forget_sdft=0.1)
    assert v.count(C.SUPPORTED) >= 95


def test_simulation_under_equal_forgetting_rarely_declares_a_difference():
    for n in (30, 200):
        v = _verdicts(400, n=n, forget_sft=0.25, forget_sdft=0.25)
        false = v.count(C.SUPPORTED) + v.count(C.CONTRADICTED)
        assert false / len(v) <= 0.075, (n, false)


def test_simulation_with_seeds_needs_agreement_and_keeps_its_error_rate():
    kw = dict(n=200, seeds=(0, 1, 2), seed_sd=0.03)
    v = _verdicts(150, forget_sft=0.25, forget_sdft=0.25, **kw)
    assert (v.count(C.SUPPORTED) + v.count(C.CONTRADICTED)) / len(v) <= 0.075
    v = _verdicts(60, forget_sft=0.45, forget_sdft=0.1, **kw)
    assert v.count(C.SUPPORTED) >= 54


# --- report pieces ----------------------------------------------------------------------------

def test_report_tables_show_the_matrix_and_the_transfer_row_per_method():
    d = _data(_one_seed("sft") | _one_seed("sdft", tool=("0001", "0111", "0111")), stage_names=("tools", "chem"))
    mats = RC.matrix_tables(d)
    assert [t.header for t in mats][0] == ["task (stage it is trained)", "base %", "after 1: tools %",
                                           "after 2: chem %"]
    assert mats[0].rows[0] == ["tool (1)", "25.0 [4.6, 69.9]", "100.0 [51.0, 100.0]", "75.0 [30.1, 95.4]"]
    t = RC.transfer_table(d)
    assert t.rows[0][:3] == ["sft", "1", "-25.0"] and t.rows[1][:3] == ["sdft", "1", "+0.0"]
    assert t.rows[2][0] == "sdft - sft" and t.rows[2][2] == "+25.0" and t.row_classes[2] == "flag"


# --- the stages schema ------------------------------------------------------------------------

def _stage(name="a", task="tooluse", **kw):
    return {"name": name, "task": task, "train": {"split": "eval_real"}, "test": {"split": "paper68"}} | kw


@pytest.mark.parametrize("raw, message", [
    ([], "stages: at least one stage"),
    ({"name": "a"}, "stages: expected a list of stages, got dict"),
    ([_stage("x"), _stage("x", task="science")], "stages[1].name: 'x' is used twice"),
    ([_stage(task="x")], "stages[0].task: unknown task 'x' (known: science, tooluse)"),
    ([_stage(), _stage("b", trian={})], "stages[1].trian: unknown key"),
    ([_stage(test={"split": "paper68", "limit": 0})], "stages[0].test.limit: Input should be greater than 0"),
    ([_stage("a"), _stage("b")], "stages[1].task: 'tooluse' is already trained by stage 'a'"),
    ([_stage(train_overrides={"max_stepz": 3})], "stages[0].train_overrides.max_stepz: unknown training setting"),
    ([_stage(train_overrides={"method": "sft"})], "stages[0].train_overrides.method: set by the arm"),
    ([_stage(max_new_tokens=0)], "stages[0].max_new_tokens: Input should be greater than 0"),
])
def test_bad_stages_fail_in_one_line_naming_the_key_path(raw, message):
    with pytest.raises(ConfigError) as e:
        parse_stages(raw)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_stage_config_layers_the_stage_overrides_and_names_them_in_errors():
    (s,) = parse_stages([_stage(train_overrides={"max_steps": 3})])
    shared = {"method": "sft", "model": "m", "seed": 0, "max_steps": 8, "lr": 1e-3, "bf16": False}
    cfg = stage_config(shared, s, 0)
    assert (cfg.max_steps, cfg.lr, cfg.method, cfg.task) == (3, 1e-3, "sft", "tooluse")
    (sci,) = parse_stages([_stage(task="science")])
    assert stage_config(shared | {"task": "tooluse"}, sci, 0).task == "science"
    (bad,) = parse_stages([_stage(train_overrides={"lr": "fast"})])
    with pytest.raises(ConfigError, match=r"^stages\[0\]\.train_overrides\.lr: expected a number"):
        stage_config(shared, bad, 0)
    with pytest.raises(ConfigError, match=r"^arms\.sft\.train\.lr: must be positive"):
        stage_config(shared | {"lr": -1.0}, s, 0, origin={"lr": "arms.sft.train"})


def test_a_stage_without_a_budget_uses_its_tasks_default():
    (s,) = parse_stages([_stage(task="science")])
    assert s.max_tokens() == get_task("science").default_max_new_tokens


def test_chain_keys_change_downstream_only():
    k = stage_chain_keys("base", ["s1", "s2", "s3"])
    assert len(set(k)) == 3 and k == stage_chain_keys("base", ["s1", "s2", "s3"])
    k2 = stage_chain_keys("base", ["s1", "s2-changed", "s3"])
    assert k2[0] == k[0] and k2[1] != k[1] and k2[2] != k[2]
    assert all(a != b for a, b in zip(stage_chain_keys("other-base", ["s1", "s2", "s3"]), k))
    # a stage's key depends on where it starts, not only on its own settings
    assert stage_chain_keys("base", ["s2"])[0] != k[1]


# --- the sequential suites --------------------------------------------------------------------

@pytest.mark.parametrize("name", SUITES)
def test_sequential_suites_parse_and_every_stage_point_is_a_valid_training_config(name, data_dir):
    path = ROOT / "suites" / f"{name}.yaml"
    data = read_mapping(path)
    stages = parse_stages(data["stages"])
    assert [s.task for s in stages] == ["tooluse", "science"]
    assert set(data) <= (set(Suite.model_fields) - {"task"}) | {"stages"}
    arms = {k: ArmSpec.model_validate(v) for k, v in data["arms"].items()}
    assert {"base", "sft", "sdft"} <= set(arms)
    for arm_name, arm in arms.items():
        if arm_name not in ("sft", "sdft"):
            continue
        for seed in data["seeds"]:
            shared = dict(data["train"]) | arm.train | {"method": arm_name, "model": data["model"], "seed": seed}
            for i, s in enumerate(stages):
                stage_config(shared, s, i)
    if "prior" in data:
        assert resolve_relative(data["prior"]["suite"], path).is_file()
    for s in stages:
        task = get_task(s.task)
        for where, sel in (("train", s.train), ("test", s.test)):
            loaded = load_selection(task, sel.split, data_dir, where=f"{s.name}.{where}",
                                    skip_invalid=sel.skip_invalid, exclude=sel.exclude, limit=sel.limit,
                                    sample=sel.sample, seed=sel.seed, demonstrations=s.demonstrations)
            assert loaded.records


def test_paper_sequential_keeps_the_papers_order_model_and_budgets():
    data = read_mapping(ROOT / "suites" / "paper-sequential.yaml")
    stages = parse_stages(data["stages"])
    assert data["model"] == "Qwen/Qwen2.5-7B-Instruct" and data["seeds"] == [0, 1, 2]
    assert [(s.task, s.max_tokens()) for s in stages] == [("tooluse", 1024), ("science", 2048)]
    assert (data["train"]["lr"], data["train"]["batch_size"], data["train"]["warmup_steps"]) == (2e-5, 32, 10)
