"""The paper's tool-use scorer: table tests for the tricky cases and property tests."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.tasks.tooluse.scorer import score

G1 = [{"Action": "getWeather", "Action_Input": '{"city": "Paris", "days": 3}'}]
G2 = [{"Action": "search", "Action_Input": '{"q": "cats"}'},
      {"Action": "getDetails", "Action_Input": '{"id": 7}'}]


def resp(*calls, thought="Thought: ok", tail=""):
    parts = [f"{thought}\nAction: {a}\nAction Input: {i}" for a, i in calls]
    return "\n".join(parts) + tail


TABLE = [
    ("exact single call", resp(("getWeather", '{"city": "Paris", "days": 3}')), G1, True),
    ("reordered keys", resp(("getWeather", '{"days": 3, "city": "Paris"}')), G1, True),
    ("type difference 3 vs '3'", resp(("getWeather", '{"city": "Paris", "days": "3"}')), G1, False),
    ("missing argument", resp(("getWeather", '{"city": "Paris"}')), G1, False),
    ("extra argument", resp(("getWeather", '{"city": "Paris", "days": 3, "x": 1}')), G1, False),
    ("wrong action", resp(("getForecast", '{"city": "Paris", "days": 3}')), G1, False),
    ("duplicated action breaks the multiset", resp(("getWeather", '{"city": "Paris"}'),
                                                   ("getWeather", '{"days": 3}')), G1, False),
    ("multiple calls in order", resp(("search", '{"q": "cats"}'), ("getDetails", '{"id": 7}')), G2, True),
    ("multiple calls reordered", resp(("getDetails", '{"id": 7}'), ("search", '{"q": "cats"}')), G2, True),
    ("bad JSON block among good ones is skipped",
     resp(("search", '{"q": "cats"}'), ("getDetails", '{"id": 7}')) + "\nAction Input: {not json}", G2, True),
    ("text after the last call is ignored", resp(("getWeather", '{"city": "Paris", "days": 3}'),
                                                 tail="\nObservation: sunny\nFinal Answer: It is sunny."), G1, True),
    ("no action at all", "I cannot help with that.", G1, False),
]


@pytest.mark.parametrize("name,response,gold,expected", TABLE, ids=[t[0] for t in TABLE])
def test_table(name, response, gold, expected):
    assert score(response, gold).correct is expected


def test_bad_json_block_among_good_ones_keeps_the_good_ones():
    # an extra unparsable Action Input does not poison the merged dict, but its extra Action does
    r = "Action: getWeather\nAction Input: {\"city\": \"Paris\", \"days\": 3}\nAction Input: {oops}"
    s = score(r, G1)
    assert s.correct and s.n_input_blocks == 2 and s.n_input_parsed == 1


@pytest.mark.parametrize("block", [
    '{"days": ' + "9" * 5000 + "}",            # beyond Python's int-string limit: ValueError
    '{"days": ' + "[" * 100000 + "}",          # deeper than the recursion limit: RecursionError
], ids=["huge-integer", "deep-nesting"])
def test_degenerate_block_is_skipped_like_bad_json(block):
    # a degenerate sampled output must not stop the evaluation: the block counts as unparsable
    # and the good block before it still scores
    r = 'Action: getWeather\nAction Input: {"city": "Paris", "days": 3}\nAction Input: ' + block
    s = score(r, G1)
    assert s.correct and s.n_input_blocks == 2 and s.n_input_parsed == 1


def test_nested_object_cannot_be_parsed_non_greedy():
    gold = [{"Action": "createUser", "Action_Input": '{"user": {"name": "Ann"}}'}]
    r = 'Action: createUser\nAction Input: {"user": {"name": "Ann"}}'
    s = score(r, gold)
    assert not s.correct  # known quirk of the paper's scorer, kept on purpose
    assert s.action_match and s.n_input_parsed == 0


def test_optional_gold_name_never_matches():
    gold = [{"Action": "[Optional]updateUserProfile", "Action_Input": "{}"}]
    for r in ["Action: [Optional]updateUserProfile\nAction Input: {}",
              "Action: updateUserProfile\nAction Input: {}", "Action: Optional\nAction Input: {}"]:
        assert not score(r, gold).correct


def test_diagnostics_are_separate_from_the_metric():
    s = score(resp(("getWeather", '{"city": "Paris"}')), G1)
    assert not s.correct and s.format_valid and s.action_match
    assert s.arg_precision == 1.0 and s.arg_recall == 0.5 and abs(s.arg_f1 - 2 / 3) < 1e-12


def test_int_and_float_equal_as_in_python():
    # json 3.0 == 3 in Python, and the authors compare with ==; keep that behaviour
    assert score(resp(("getWeather", '{"city": "Paris", "days": 3.0}')), G1).correct


names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,10}", fullmatch=True)
scalars = st.one_of(st.integers(-1000, 1000), st.text(st.characters(codec="ascii", exclude_characters="{}\\\"\n"),
                                                      max_size=8), st.booleans())
arg_dicts = st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), scalars, max_size=4)


@st.composite
def gold_calls(draw):
    n = draw(st.integers(1, 3))
    acts = draw(st.lists(names, min_size=n, max_size=n))
    args = draw(st.lists(arg_dicts, min_size=n, max_size=n))
    return [{"Action": a, "Action_Input": json.dumps(d)} for a, d in zip(acts, args)]


def merged(calls):
    out = {}
    for c in calls:
        out.update(json.loads(c["Action_Input"]))
    return out


@settings(max_examples=200, deadline=None)
@given(gold_calls(), st.randoms(use_true_random=False))
def test_permuted_calls_with_shuffled_keys_score_correct(calls, rnd):
    # a response that makes exactly the gold calls, in any order and with keys in any order,
    # is correct iff merging in the response's order gives the gold's merged dict
    order = list(range(len(calls)))
    rnd.shuffle(order)
    parts = []
    for i in order:
        d = json.loads(calls[i]["Action_Input"])
        items = list(d.items())
        rnd.shuffle(items)
        parts.append((calls[i]["Action"], json.dumps(dict(items))))
    r = resp(*parts)
    expected = merged([calls[i] for i in order]) == merged(calls)
    assert score(r, calls).correct is expected


@settings(max_examples=200, deadline=None)
@given(gold_calls(), st.text(max_size=40))
def test_gold_demonstration_is_always_correct_and_trailing_text_ignored(calls, tail):
    from harness.tasks.tooluse.data import demonstration_from_calls

    tail = tail.replace("Action", "")  # trailing prose with no further actions
    assert score(demonstration_from_calls(calls) + "\n" + tail, calls).correct


@settings(max_examples=200, deadline=None)
@given(gold_calls(), st.text(max_size=200))
def test_score_never_crashes_and_diagnostics_are_bounded(calls, text):
    s = score(text, calls)
    assert 0.0 <= s.arg_precision <= 1.0 and 0.0 <= s.arg_recall <= 1.0 and 0.0 <= s.arg_f1 <= 1.0
    if s.correct:
        assert s.action_match
