"""Tool-use loaders: the paper's files, raw ToolAlpaca files, and bad input."""

import json

import pytest

from harness.errors import DataError
from harness.tasks.base import teacher_turn
from harness.tasks.tooluse import data as tu
from harness.tasks.tooluse.scorer import score


def test_paper68_prompts_are_byte_identical(data_dir):
    raw = json.loads((data_dir / tu.SPLITS["paper68"]).read_text())
    for r in raw:
        assert tu.build_prompt(r["name"], r["description"], r["nl_documentation"], r["instruction"]) == r["prompt"]
    loaded = tu.load_tooluse(data_dir / tu.SPLITS["paper68"])
    assert len(loaded.records) == 68
    assert sum(len(r.gold_calls) > 1 for r in loaded.records) == 19
    assert [r.prompt for r in loaded.records] == [r["prompt"] for r in raw]


def test_regen97_loads(data_dir):
    loaded = tu.load_tooluse(data_dir / tu.SPLITS["regen97"])
    assert len(loaded.records) == 97 and len({r.item_id for r in loaded.records}) == 97


def test_eval_real_is_strict_about_invalid_gold_json(data_dir):
    with pytest.raises(DataError) as e:
        tu.load_tooluse(data_dir / tu.SPLITS["eval_real"])
    msg = str(e.value)
    assert "eval_real.json" in msg and "record" in msg and "Action_Input is not JSON" in msg


def test_eval_real_skip_invalid_lists_every_skipped_record(data_dir):
    loaded = tu.load_tooluse(data_dir / tu.SPLITS["eval_real"], skip_invalid=True)
    assert len(loaded.skipped) == 4
    assert all(s["record"].startswith("CurrencyBeacon/") for s in loaded.skipped)
    assert len(loaded.records) == 110


def test_raw_simulated_matches_the_paper_set(data_dir):
    raw = tu.load_tooluse(data_dir / tu.SPLITS["eval_simulated"], skip_invalid=True)
    paper = tu.load_tooluse(data_dir / tu.SPLITS["paper68"])
    by_prompt = {r.prompt: r for r in raw.records}
    # the paper's 68 are ToolAlpaca simulated items; each prompt built from the raw file matches
    assert sum(p.prompt in by_prompt for p in paper.records) == 68


def test_demonstration_from_gold_calls_is_deterministic_and_scores_correct(data_dir):
    loaded = tu.load_tooluse(data_dir / tu.SPLITS["paper68"])
    demo = loaded.records[0].demonstration
    assert demo == tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records[0].demonstration
    assert demo.startswith("Thought: I need to call ") and "\nAction: " in demo and "\nAction Input: " in demo
    ok = sum(score(r.demonstration, r.gold_calls).correct for r in loaded.records)
    # only the quirk items (the [Optional] name, nested objects) can fail on the gold itself
    assert ok >= 65


def test_golden_response_is_used_when_present(tmp_path):
    rec = {"name": "A", "description": "d", "nl_documentation": "doc\n", "instruction": "q",
           "golden_answer": [{"Action": "f", "Action_Input": "{}"}],
           "golden_response": ["Thought: call f", "Action: f", "Action Input: {}"]}
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    r = tu.load_tooluse(p).records[0]
    assert r.demonstration == "Thought: call f\nAction: f\nAction Input: {}" and r.demo_source == "golden_response"


def test_teacher_prompt_templates():
    p = teacher_turn("Q", "DEMO")
    assert p == ("Q\n\nThis is an example for a response to the question:\nDEMO\n\n"
                 "Now answer with a response of your own, including the thinking process:")
    assert teacher_turn("Q", "DEMO", "code").endswith("thinking process.")
    assert teacher_turn("Q", "D", "{prompt}|{demonstration}") == "Q|D"
    # a prompt that mentions a field name is inserted verbatim, not substituted again
    assert teacher_turn("use {demonstration} here", "D", "{prompt}|{demonstration}") == "use {demonstration} here|D"
    with pytest.raises(DataError):
        teacher_turn("Q", "D", "no fields")


@pytest.mark.parametrize("mutate,field", [
    (lambda r: r.pop("instruction"), "instruction"),
    (lambda r: r.pop("golden_answer"), "golden_answer"),
    (lambda r: r["golden_answer"][0].pop("Action"), "golden_answer[0]"),
])
def test_missing_fields_name_file_record_and_field(tmp_path, data_dir, mutate, field):
    raw = json.loads((data_dir / tu.SPLITS["paper68"]).read_text())[:3]
    mutate(raw[1])
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(DataError) as e:
        tu.load_tooluse(p)
    assert str(e.value).startswith(f"{p}, record 1, field '{field}'")


def test_missing_file_and_nonpositive_limit(tmp_path, data_dir):
    with pytest.raises(DataError, match="file not found"):
        tu.load_tooluse(tmp_path / "nope.json")
    with pytest.raises(DataError, match="not found"):
        tu.resolve_split("nope", data_dir)
    with pytest.raises(DataError, match="limit must be positive"):
        tu.subset([], 0)


def test_raw_training_instances_give_the_gold_calls_of_golden_answers(tmp_path, data_dir):
    """The Octobrist fork stores each eval_real instruction both as Golden_Answers and as an Instance
    with intermediate_steps (the train_data.json layout): with Golden_Answers removed, the instances
    must yield the same gold calls."""
    src = data_dir / "toolalpaca/extras/octobrist_golden-eval_real.json"
    raw = json.loads(src.read_text())
    for api in raw:
        del api["Golden_Answers"], api["Instructions"]
    p = tmp_path / "train_like.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"record 2\.5: instance has ToolAlpaca's error"):
        tu.load_tooluse(p)
    inst = tu.load_tooluse(p, skip_invalid=True)
    gold = {r.item_id: r for r in tu.load_tooluse(src).records}
    assert len(inst.records) == 108 and [s["record"] for s in inst.skipped][:3] == [f"AviationAPI/{k}" for k in (5, 6, 7)]
    assert all(r.gold_calls == gold[r.item_id].gold_calls for r in inst.records)
    # 34 inputs end in "\nAuthentication information: <key>": stripped, as the paper's prompt has none
    assert sum("Authentication information" in i["input"] for a in raw for i in a["Instances"] if "input" in i) == 34
    assert all(r.prompt == gold[r.item_id].prompt for r in inst.records)


def _train_entry(instances):
    return [{"Name": "NoDocs", "Instances": []},  # ToolAlpaca's failed generations: no instances, skipped
            {"Name": "Weather", "Description": "d", "NLDocumentation": "doc\n", "Instances": instances,
             "Function_Projection": {"current": ["/current", "GET"], "forecast": ["/forecast", "GET"]}}]


def test_train_data_instances_keep_api_calls_strip_the_hint_and_check_steps(tmp_path):
    step = lambda tool, inp, obs="Status Code: 200. Response: {}": [
        [tool, inp, " Thought: x\nAction: " + tool + "\nAction Input: " + str(inp)], obs]
    good = {"input": "Weather in Paris?\nHint: use current", "output": "Sunny",
            "intermediate_steps": [step("getDetails", "{}"), step("current", '{"q": "Paris"}'),
                                   step("weatherNow", "{}", "weatherNow is not a valid tool, try another one."),
                                   step("forecast", {"q": "Paris", "days": 2})]}
    p = tmp_path / "train_data.json"
    p.write_text(json.dumps(_train_entry([good, {"input": "Hi", "intermediate_steps": [step("getDetails", "{}")]},
                                          "not an object"])))
    loaded = tu.load_tooluse(p, skip_invalid=True)
    (rec,) = loaded.records
    assert rec.instruction == "Weather in Paris?" and rec.prompt.endswith("Question: Weather in Paris?")
    assert rec.gold_calls == [{"Action": "current", "Action_Input": '{"q": "Paris"}'},
                              {"Action": "forecast", "Action_Input": '{"q": "Paris", "days": 2}'}]
    assert score(rec.demonstration, rec.gold_calls).correct
    assert loaded.skipped == [{"record": "Weather/1", "problem": "instance makes no API call"},
                              {"record": "Weather/2", "problem": "instance is not an object"}]
    p.write_text(json.dumps(_train_entry([good, {"input": "Hi", "intermediate_steps": [["current", "{}"]]}])))
    with pytest.raises(DataError) as e:
        tu.load_tooluse(p, skip_invalid=True)
    assert str(e.value) == f"{p}, record 1.1, field 'intermediate_steps[0]': expected [[tool, tool_input, ...], observation]"


def test_gold_input_that_is_json_but_not_an_object_is_invalid(tmp_path, data_dir):
    raw = json.loads((data_dir / tu.SPLITS["paper68"]).read_text())[:2]
    raw[1]["golden_answer"][0]["Action_Input"] = "[1, 2]"
    p = tmp_path / "list_input.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"record 1: golden_answer\[0\]\.Action_Input is JSON but not an object"):
        tu.load_tooluse(p)
    assert len(tu.load_tooluse(p, skip_invalid=True).records) == 1


def test_jsonl_errors_name_the_line(tmp_path, data_dir):
    lines = (data_dir / tu.SPLITS["regen97"]).read_text().splitlines()[:3]
    lines[2] = lines[2][:-5]
    p = tmp_path / "broken.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"broken\.jsonl: line 3 is not valid JSON"):
        tu.load_tooluse(p)


def test_jsonl_content_under_a_json_name_loads_and_plain_json_errors_stay_json_errors(tmp_path, data_dir):
    lines = (data_dir / tu.SPLITS["regen97"]).read_text().splitlines()[:3]
    p = tmp_path / "train.json"  # one record per line, as some exports name it
    p.write_text("\n".join(lines) + "\n")
    loaded = tu.load_tooluse(p)
    assert [r.prompt for r in loaded.records] == [json.loads(l)["prompt"] for l in lines]
    p.write_text('[{"prompt": "x",')
    with pytest.raises(DataError, match=r"train\.json: not valid JSON \(Expecting"):
        tu.load_tooluse(p)


def test_stratified_subset_covers_every_api_in_proportion_and_is_seeded(data_dir):
    from collections import Counter

    from harness.tasks.tooluse.data import load_tooluse, resolve_split, subset

    recs = load_tooluse(resolve_split("paper68", data_dir)).records
    per_api = Counter(r.api for r in recs)
    assert len(per_api) == 10
    assert len({r.api for r in subset(recs, 16)}) < 10  # file order is grouped by API
    s = subset(recs, 30, "stratified", seed=0)
    got = Counter(r.api for r in s)
    assert len(s) == 30 and set(got) == set(per_api)
    for api, k in got.items():  # one each, then proportional to the API's share (largest remainder)
        expected = 1 + 20 * (per_api[api] - 1) / (len(recs) - 10)
        assert abs(k - expected) < 1 + 1e-9, (api, k, expected)
    idx = [recs.index(r) for r in s]
    assert idx == sorted(idx)  # file order kept
    assert subset(recs, 30, "stratified", seed=0) == s
    assert subset(recs, 30, "stratified", seed=1) != s
    assert len(subset(recs, 5, "stratified")) == 5  # fewer items than APIs
    assert subset(recs, 68, "stratified") == recs
