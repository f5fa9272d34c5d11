"""The task interface (`harness.tasks.base`), the Science Q&A task, and the tool-use adapter."""

import json
from collections import Counter

import jinja2
import pytest

from harness.errors import ConfigError, DataError
from harness.tasks.base import Task, load_selection, render_messages, stratified_subset, teacher_turn
from harness.tasks.registry import TASKS, get_task
from harness.tasks.science import ScienceTask
from harness.tasks.science import data as sd
from harness.tasks.science.scorer import extract_answer
from harness.tasks.tooluse import data as tu
from harness.tasks.tooluse.scorer import score as tooluse_score

SCI = ScienceTask()
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SYSTEM = ("\nGiven a question and four options, please select the right answer. Respond in the following format:\n"
          "<reasoning>\n...\n</reasoning>\n<answer>\n...\n</answer>\n\nFor the answer, only output the letter "
          "corresponding to the correct option (A, B, C, or D), and nothing else. Do not restate the answer text. "
          "For example, if the answer is \"A\", just output:\n<answer>\nA\n</answer>\n")


class ChatTok:
    """A tokenizer stand-in that renders chat messages with a ChatML template."""

    chat_template = TEMPLATE

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return jinja2.Template(self.chat_template).render(messages=messages,
                                                           add_generation_prompt=add_generation_prompt)


def _rec(answer="B", user="What is 1+1?\n\nA: 1\nB: 2\nC: 3\nD: 4", **extra):
    r = {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]}
    if answer is not None:
        r["answer"] = answer
    return r | extra


def _write(tmp_path, rows, name="s.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


# --- registry and protocol ------------------------------------------------------------------

def test_registry_holds_both_tasks_implementing_the_protocol():
    assert set(TASKS) == {"tooluse", "science"}
    for name, task in TASKS.items():
        assert isinstance(task, Task) and task.name == name and get_task(name) is task
    assert TASKS["science"].version != TASKS["tooluse"].version


def test_unknown_task_names_the_key_path_and_the_known_tasks():
    with pytest.raises(ConfigError) as e:
        get_task("medical", where="stages[1].task")
    assert str(e.value) == "stages[1].task: unknown task 'medical' (known: science, tooluse)"


# --- science data ---------------------------------------------------------------------------

def test_eval_and_train_splits_load_with_the_shipped_prompts(data_dir):
    ev, tr = SCI.load_split("eval507", data_dir), SCI.load_split("train_pool", data_dir)
    assert (len(ev.records), len(tr.records)) == (507, 1803)
    assert Counter(r.answer for r in ev.records) == {"A": 123, "B": 127, "C": 127, "D": 130}
    assert Counter(r.answer for r in tr.records) == {"A": 449, "B": 435, "C": 476, "D": 443}
    raw = [json.loads(line) for line in (data_dir / sd.SPLITS["eval507"]).read_text(encoding="utf-8").splitlines()]
    assert [SCI.student_prompt(r) for r in ev.records] == [x["prompt"] for x in raw]
    assert {r.messages[0]["content"] for r in ev.records + tr.records} == {SYSTEM}
    assert all(list(r.options) == list("ABCD") for r in ev.records + tr.records)
    assert len({r.item_id for r in ev.records}) == 507 and len({r.item_id for r in tr.records}) == 1803
    assert ev.demo_policy == tr.demo_policy == "answer-only"
    assert ev.data_hash == SCI.load_split("eval507", data_dir).data_hash  # stable across loads


def test_train_pool_is_disjoint_from_eval_by_question_and_options(data_dir):
    ev, tr = SCI.load_split("eval507", data_dir).records, SCI.load_split("train_pool", data_dir).records
    assert not {SCI.identity(r) for r in ev} & {SCI.identity(r) for r in tr}
    assert not {r.item_id for r in ev} & {r.item_id for r in tr}
    # One question stem (proline's molar weight) occurs in both with different options: a distinct item
    # under the identity the pool was built with, and the only near-duplicate.
    shared = {r.question for r in ev} & {r.question for r in tr}
    assert len(shared) == 1 and "'C1CC(NC1)C(=O)O'" in shared.pop()


def test_identity_reproduces_how_the_train_pool_was_derived(data_dir):
    """The pool is the 2100 SDPO chemistry items minus those also in the 507 eval items: under the
    question+options identity that is exactly 297 removed and 1803 kept (MANIFEST)."""
    ev = {SCI.identity(r) for r in SCI.load_split("eval507", data_dir).records}
    tr = {SCI.identity(r) for r in SCI.load_split("train_pool", data_dir).records}
    sdpo = []
    for f in ("sdpo_sciknoweval_chemistry_train.jsonl", "sdpo_sciknoweval_chemistry_test.jsonl"):
        sdpo += [json.loads(x) for x in (data_dir / "science" / f).read_text(encoding="utf-8").splitlines()]
    ids = [sd.question_identity(*sd.parse_options(r["prompt"].removesuffix("\nPlease reason step by step.")))
           for r in sdpo]
    assert (sum(i in ev for i in ids), sum(i in tr for i in ids), len(ids)) == (297, 1803, 2100)


def test_exclude_drops_eval_items_from_a_combined_file(data_dir, tmp_path):
    lines = ((data_dir / sd.SPLITS["eval507"]).read_text(encoding="utf-8").splitlines()[:5]
             + (data_dir / sd.SPLITS["train_pool"]).read_text(encoding="utf-8").splitlines()[:7])
    p = tmp_path / "mixed.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sel = load_selection(SCI, str(p), data_dir, where="task.train", exclude="eval507")
    assert len(sel.records) == 7 and sel.data_hash == SCI.records_hash(sel.records)
    with pytest.raises(ConfigError, match=r"^task.train.limit: 8 is more than the 7 items available$"):
        load_selection(SCI, str(p), data_dir, where="task.train", exclude="eval507", limit=8)


def test_stratified_subset_keeps_the_letter_balance(data_dir):
    recs = SCI.load_split("eval507", data_dir).records
    sub = SCI.subset(recs, 40, "stratified", seed=3)
    assert Counter(r.answer for r in sub) == {"A": 10, "B": 10, "C": 10, "D": 10}
    assert [recs.index(r) for r in sub] == sorted(recs.index(r) for r in sub)  # file order
    assert sub == SCI.subset(recs, 40, "stratified", seed=3) and sub != SCI.subset(recs, 40, "stratified", seed=4)
    assert SCI.subset(recs, 5) == recs[:5]


# --- prompts --------------------------------------------------------------------------------

@pytest.mark.parametrize("template,end", [("paper", ":"), ("code", ".")])
def test_teacher_keeps_the_system_message_and_replaces_only_the_user_turn(data_dir, template, end):
    r = SCI.load_split("eval507", data_dir).records[1]
    student, teacher = SCI.student_prompt(r), SCI.teacher_prompt(r, template=template)
    assert [m["role"] for m in teacher] == ["system", "user"] and teacher[0] == student[0]
    assert teacher[1]["content"] == (
        student[1]["content"] + "\n\nThis is an example for a response to the question:\n<answer>\nC\n</answer>"
        "\n\nNow answer with a response of your own, including the thinking process" + end)
    other = SCI.teacher_prompt(r, "<reasoning>\nIt is C.\n</reasoning>\n<answer>\nC\n</answer>")
    assert "\nIt is C.\n" in other[1]["content"] and other[0] == student[0]
    assert r.messages == student  # building prompts does not mutate the record


def test_sft_target_is_the_answer_only_demonstration_and_scores_correct(data_dir):
    for r in SCI.load_split("train_pool", data_dir).records[:50]:
        assert SCI.sft_target(r) == f"<answer>\n{r.answer}\n</answer>"
        assert SCI.score(r, SCI.sft_target(r)).correct


def test_rendered_prompt_has_the_system_block_then_the_user_turn(data_dir):
    r = SCI.load_split("eval507", data_dir).records[0]
    text = render_messages(ChatTok(), SCI.student_prompt(r))
    assert text == (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{r.messages[1]['content']}"
                    "<|im_end|>\n<|im_start|>assistant\n")


# --- scorer ---------------------------------------------------------------------------------

@pytest.mark.parametrize("output,correct,format_valid", [
    ("<reasoning>\nsum\n</reasoning>\n<answer>\nB\n</answer>", True, True),
    ("<answer>B</answer>", True, True),
    ("<answer>  B \t</answer>", True, True),                 # whitespace around the letter is stripped
    ("<answer>b</answer>", False, True),                      # case matters
    ("<answer>B.</answer>", False, True),
    ("<answer>(B)</answer>", False, True),
    ("<answer>B: 2</answer>", False, True),
    ("<answer>C</answer>", False, True),                      # wrong letter
    ("The answer is B.", False, False),                       # no tag: the whole output is the answer
    ("B", True, False),                                       # ... so a bare letter counts (authors' rule)
    ("\nB\n</answer>", True, False),                          # closing tag only
    ("<answer>A</answer> on reflection <answer>B</answer>", True, True),   # the last answer wins
    ("<answer>B</answer> on reflection <answer>A</answer>", False, True),
    ("<answer>B</answer>\n<answer>", False, False),           # a trailing unclosed tag takes the rest
    ("<answer>B", True, False),
    ("", False, False),
])
def test_scorer_follows_the_authors_extraction(output, correct, format_valid):
    rec = sd._record("t.jsonl", "line 1", _rec("B"))
    s = SCI.score(rec, output)
    assert s.correct is correct and s.diagnostics["format_valid"] is format_valid
    assert s.correct == (output.split("<answer>")[-1].split("</answer>")[0].strip() == "B")
    assert s.parsed["answer"] == extract_answer(output)[:64]


def test_scorer_diagnostics():
    rec = sd._record("t.jsonl", "line 1", _rec("B"))
    d = SCI.score(rec, "<reasoning>x</reasoning><answer>A</answer><answer>E</answer>").diagnostics
    assert d == {"format_valid": True, "valid_letter": False, "n_answer_tags": 2, "has_reasoning": True}
    assert SCI.score(rec, "<answer>D</answer>").diagnostics["valid_letter"] is True
    assert set(SCI.summary_diagnostics) <= set(d)


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("row,field,problem", [
    (_rec(None), "answer", "missing"),
    (_rec("E"), "answer", "'E' is not among the option letters A, B, C, D"),
    (_rec("b"), "answer", "'b' is not among the option letters"),
    (_rec(2), "answer", "Input should be a valid string"),
    (_rec("B", user="What is 1+1? A or B?"), "prompt[1].content", "no options block"),
    ({"answer": "A"}, "prompt", "missing"),
    (_rec("B") | {"prompt": [{"role": "user", "content": "q\n\nA: 1\nB: 2"}, {"role": "system", "content": "s"}]},
     "prompt", "expected [system, user] or [user] messages"),
    (_rec("B") | {"prompt": [{"role": "user"}]}, "prompt[0].content", "missing"),
])
def test_bad_records_name_file_record_and_field(tmp_path, row, field, problem):
    p = _write(tmp_path, [_rec("A"), row])
    with pytest.raises(DataError) as e:
        SCI.load_split(str(p), tmp_path)
    msg = str(e.value)
    assert msg.startswith(f"{p}, record line 2, field '{field}': ") and problem in msg and "\n" not in msg
    loaded = SCI.load_split(str(p), tmp_path, skip_invalid=True)
    assert len(loaded.records) == 1 and loaded.skipped[0]["record"] == "line 2"


def test_unreadable_files_are_one_line_errors(tmp_path):
    p = _write(tmp_path, [_rec("A"), "{not json"])
    with pytest.raises(DataError, match=r"s.jsonl: line 2 is not valid JSON"):
        SCI.load_split(str(p), tmp_path, skip_invalid=True)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(_rec("A", user="Caf\u00e9?\n\nA: x\nB: y"), ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError, match="is not UTF-8"):
        SCI.load_split(str(latin), tmp_path)
    with pytest.raises(DataError, match="known splits: eval507, train_pool"):
        SCI.load_split("eval508", tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="non-empty"):
        SCI.load_split(str(tmp_path / "empty.jsonl"), tmp_path)


def test_repeated_question_gets_a_distinct_id(tmp_path):
    recs = SCI.load_split(str(_write(tmp_path, [_rec("B"), _rec("B")])), tmp_path).records
    assert recs[1].item_id == recs[0].item_id + "#1"


# --- demonstrations -------------------------------------------------------------------------

def test_demonstrations_file_matched_by_id_or_by_prompt(tmp_path):
    other = _rec("C", user="What is 1+2?\n\nA: 1\nB: 2\nC: 3\nD: 4")
    data = _write(tmp_path, [_rec("B"), other])
    ids = [r.item_id for r in SCI.load_split(str(data), tmp_path).records]
    demos = _write(tmp_path, [{"id": ids[0], "output_text": "<reasoning>1+1=2</reasoning><answer>B</answer>"},
                              {"prompt": other["prompt"], "output_text": "<answer>C</answer>"}], "demos.jsonl")
    loaded = SCI.load_split(str(data), tmp_path, demonstrations=str(demos))
    assert [r.demonstration for r in loaded.records] == ["<reasoning>1+1=2</reasoning><answer>B</answer>",
                                                          "<answer>C</answer>"]
    assert loaded.demo_policy == "file:demos.jsonl"
    assert loaded.data_hash != SCI.load_split(str(data), tmp_path).data_hash  # demonstrations enter the key
    assert "1+1=2" in SCI.teacher_prompt(loaded.records[0])[1]["content"]


def test_demonstrations_file_missing_a_record_names_file_and_record(tmp_path):
    data = _write(tmp_path, [_rec("B"), _rec("C", user="Q2\n\nA: x\nB: y\nC: z\nD: w")])
    rid = SCI.load_split(str(data), tmp_path).records[0].item_id
    demos = _write(tmp_path, [{"id": rid, "output_text": "<answer>B</answer>"}], "demos.jsonl")
    with pytest.raises(DataError) as e:
        SCI.load_split(str(data), tmp_path, demonstrations=str(demos))
    assert str(e.value).startswith(f"{demos}: no demonstration for record chem-") and "record line 2" in str(e.value)
    bad = _write(tmp_path, [{"id": rid}], "bad.jsonl")
    with pytest.raises(DataError, match=r"bad.jsonl, record line 1, field 'output_text': missing"):
        SCI.load_split(str(data), tmp_path, demonstrations=str(bad))
    with pytest.raises(DataError, match="demonstrations file not found .*answer-only, output_text"):
        SCI.load_split(str(data), tmp_path, demonstrations="answer_only")


def test_records_carrying_output_text_use_it(tmp_path):
    data = _write(tmp_path, [_rec("B", output_text="<answer>B</answer>"), _rec("C", user="Q\n\nA: x\nB: y\nC: z")])
    auto = SCI.load_split(str(data), tmp_path)
    assert [r.demo_source for r in auto.records] == ["output_text", "answer-only"]
    assert auto.demo_policy == "answer-only+output_text"
    forced = SCI.load_split(str(data), tmp_path, demonstrations="answer-only")
    assert forced.records[0].demonstration == "<answer>\nB\n</answer>" and forced.demo_policy == "answer-only"
    with pytest.raises(DataError, match=r"record line 2, field 'output_text': missing"):
        SCI.load_split(str(data), tmp_path, demonstrations="output_text")


# --- tool use behind the interface: exactly what the existing functions return --------------

def test_tooluse_adapter_delegates_without_changing_anything(data_dir):
    from harness.generation import render_chat

    task = get_task("tooluse")
    loaded, ref = task.load_split("paper68", data_dir), tu.load_tooluse(data_dir / tu.SPLITS["paper68"])
    assert (loaded.records, loaded.skipped, loaded.path, loaded.data_hash) == \
        (ref.records, ref.skipped, ref.path, ref.data_hash)
    assert loaded.demo_policy == "gold_calls"
    tok = ChatTok()
    for r in ref.records[:8]:
        assert render_messages(tok, task.student_prompt(r)) == render_chat(tok, r.prompt)
        assert render_messages(tok, task.student_prompt(r), False) == render_chat(tok, r.prompt, False)
        for template in ("paper", "code"):
            assert render_messages(tok, task.teacher_prompt(r, template=template)) == \
                render_chat(tok, teacher_turn(r.prompt, r.demonstration, template))
        assert task.sft_target(r) == r.demonstration and task.identity(r) == r.prompt
        for out in (r.demonstration, "Action: nope\nAction Input: {\"a\": 1}", ""):
            s, ref_s = task.score(r, out), tooluse_score(out, r.gold_calls)
            assert s.correct == ref_s.correct and s.diagnostics == ref_s.diagnostics()
            assert s.parsed == {"actions": ref_s.pred_actions, "inputs": ref_s.pred_inputs}
    assert task.records_hash(ref.records[:5]) == tu.records_hash(ref.records[:5])
    assert task.describe(ref.records[0]) == tu.as_dict(ref.records[0])
    with pytest.raises(ConfigError, match="tool use takes its demonstrations from the data file"):
        task.load_split("paper68", data_dir, demonstrations="answer-only")


@pytest.mark.parametrize("limit,seed", [(1, 0), (7, 0), (16, 2), (40, 5), (67, 1)])
def test_generic_stratified_subset_equals_tooluse_subset(data_dir, limit, seed):
    recs = tu.load_tooluse(data_dir / tu.SPLITS["paper68"]).records
    expected = tu.subset(recs, limit, "stratified", seed)
    assert stratified_subset(recs, limit, lambda r: r.api, "stratified", seed) == expected
    assert get_task("tooluse").subset(recs, limit, "stratified", seed) == expected
