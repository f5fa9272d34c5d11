"""The one validation mechanism of user-written files (harness.config_schema): strict keys listing
the allowed ones, strict types that never convert a value, and one `FILE: key.path: message` line;
and the files that use it (suite, prior suite, gate, training settings) through it."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from pydantic import TypeAdapter, ValidationError, model_validator

from harness.config_schema import Strict, config_error, key_path, typed, unknown_key
from harness.errors import ConfigError


OptInt, Number, Bool, Names, Text = typed("int", "none"), typed("float"), typed("bool"), typed("str-list"), typed("str")


class Leaf(Strict):
    unknown_key: ClassVar[str] = "unknown leaf setting"
    n: OptInt = None
    x: Number = 1.0
    on: Bool = False
    names: Names = ()


class Root(Strict):
    name: Text
    leaf: Leaf | None = None
    leaves: dict[str, Leaf] = {}
    items: list[Leaf] = []

    @model_validator(mode="after")
    def _named(self):
        if self.name == "bad":
            raise ValueError("name: 'bad' is not allowed here")
        return self


def _error(data: Any, schema=Root, **kw) -> str:
    with pytest.raises(ValidationError) as e:
        TypeAdapter(schema).validate_python(data)
    err = config_error(e.value, schema, **kw)
    assert isinstance(err, ConfigError) and "\n" not in str(err)
    return str(err)


def test_key_paths_as_written():
    assert key_path(["arms", "sdft", "train", "lr"]) == "arms.sdft.train.lr"
    assert key_path([1, "test", "limit"], root="stages") == "stages[1].test.limit"
    assert key_path(["lr"], root="train") == "train.lr"
    assert key_path(["benchmarks", "hellaswg", "[key]"]) == "benchmarks.hellaswg"
    assert key_path([]) == ""


@pytest.mark.parametrize("data, message", [
    ({"name": "a", "nme": 1}, "f.yaml: nme: unknown key (allowed: items, leaf, leaves, name)"),
    ({"name": "a", "leaf": {"m": 1}}, "f.yaml: leaf.m: unknown leaf setting (allowed: n, names, on, x)"),
    ({"name": "a", "leaves": {"k": {"m": 1}}}, "f.yaml: leaves.k.m: unknown leaf setting (allowed: n, names, on, x)"),
    ({"name": "a", "items": [{}, {"m": 1}]}, "f.yaml: items[1].m: unknown leaf setting (allowed: n, names, on, x)"),
    ({"name": "a", "leaf": {"n": "5"}}, "f.yaml: leaf.n: expected an integer or null, got '5'"),
    ({"name": "a", "leaf": {"n": True}}, "f.yaml: leaf.n: expected an integer or null, got True"),
    ({"name": "a", "leaf": {"x": "fast"}}, "f.yaml: leaf.x: expected a number, got 'fast'"),
    ({"name": "a", "leaf": {"on": "yes"}}, "f.yaml: leaf.on: expected true or false, got 'yes'"),
    ({"name": "a", "leaf": {"names": "q_proj"}}, "f.yaml: leaf.names: expected a list of strings, got 'q_proj'"),
    ({"name": 3}, "f.yaml: name: expected a string, got 3"),
    ({}, "f.yaml: name: Field required"),
    ({"name": "bad"}, "f.yaml: name: 'bad' is not allowed here"),  # a model-level check names its own key
    # an unknown key is reported first, whatever else is wrong
    ({"name": 3, "leaf": {"x": "fast", "m": 1}}, "f.yaml: leaf.m: unknown leaf setting"),
])
def test_one_line_naming_file_key_path_and_problem(data, message):
    assert _error(data, file="f.yaml").startswith(message)


def test_a_root_places_the_value_inside_its_file():
    assert _error([{}, {"n": "x"}], list[Leaf], root="stages") == "stages[1].n: expected an integer or null, got 'x'"
    assert _error({"m": 1}, Leaf, root="train") == "train.m: unknown leaf setting (allowed: n, names, on, x)"
    assert unknown_key(Leaf) == "unknown leaf setting (allowed: n, names, on, x)"


def test_values_are_checked_never_converted():
    leaf = Leaf.model_validate({"n": 3, "x": 2, "names": ["a"]})
    assert type(leaf.x) is int and leaf.names == ["a"]  # an integer written for a number stays one


# ----- the files that use it ------------------------------------------------------------------------
def test_training_settings_unknown_key_lists_the_settings():
    from harness.train.config import TrainConfig, TrainSettings

    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({"method": "sft", "learning_rate": 1e-4}, where="arms.sft.train")
    msg = str(e.value)
    assert msg.startswith("arms.sft.train.learning_rate: unknown training setting (allowed: batch_size, bf16, ")
    assert set(TrainSettings.model_fields) == set(TrainConfig.__dataclass_fields__)


def test_training_values_keep_their_written_type():
    from harness.train.config import TrainConfig

    cfg = TrainConfig.from_dict({"method": "sft", "bf16": False, "lr": 1, "max_grad_norm": 2})
    assert type(cfg.lr) is int and type(cfg.max_grad_norm) is int  # hashed as written: the key does not move
    with pytest.raises(ConfigError, match=r"^train.max_steps: expected an integer or null, got 1.5$"):
        TrainConfig.from_dict({"method": "sft", "bf16": False, "max_steps": 1.5})
    with pytest.raises(ConfigError, match=r"^train.lora: expected true or false, got 'yes'$"):
        TrainConfig(method="sft", bf16=False, lora="yes")
