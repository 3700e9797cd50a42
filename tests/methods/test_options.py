"""Method options of the wrong type are refused by the config itself, naming the option and the
type it takes, for the Python API and the CLI alike."""

import math
from dataclasses import fields

import pytest

from dit_sparse.methods import METHODS, method_class, resolve_method


@pytest.mark.parametrize("name", list(METHODS))
def test_every_option_refuses_a_value_of_the_wrong_type(name):
    cls = method_class(name)
    for field in fields(cls):
        with pytest.raises(TypeError, match=rf"option {field.name} takes .+, got <object"):
            cls(**{field.name: object()})


def test_the_message_names_the_option_and_its_type():
    with pytest.raises(TypeError, match=r"decay_factor takes a number, got 'abc' \(str\)"):
        resolve_method("radial", decay_factor="abc")
    with pytest.raises(TypeError, match=r"block_size takes an integer, got 64\.0 \(float\)"):
        resolve_method("svg", block_size=64.0)
    with pytest.raises(TypeError, match=r"model_type takes one of 'wan', 'hunyuan', got 3"):
        resolve_method("radial", model_type=3)
    with pytest.raises(TypeError, match=r"sparsity takes a number or None, got True"):
        resolve_method("adaspa", sparsity=True)  # a bool is not a number to users


def test_values_of_the_right_type_still_pass_and_bad_values_stay_value_errors():
    assert resolve_method("radial", decay_factor=1).decay_factor == 1  # an int is a number
    assert resolve_method("adaspa", search_steps=[0.1, 3]).search_steps == (0.1, 3)
    with pytest.raises(ValueError, match="model_type must be one of"):
        resolve_method("radial", model_type="cog")


def test_command_line_text_is_read_as_the_option_type():
    radial, adaspa = method_class("radial"), method_class("adaspa")
    assert radial.option_from_text("decay_factor", "0.5") == 0.5
    assert math.isinf(radial.option_from_text("decay_factor", "inf"))
    assert radial.option_from_text("model_type", "hunyuan") == "hunyuan"
    assert adaspa.option_from_text("warmup_lse", "TRUE") is True
    assert adaspa.option_from_text("search_rows", "None") is None
    assert adaspa.option_from_text("search_steps", "0.2,0.6") == (0.2, 0.6)
    with pytest.raises(TypeError, match=r"Radial option decay_factor takes a number, got 'abc'"):
        radial.option_from_text("decay_factor", "abc")
    with pytest.raises(TypeError, match=r"block_size takes an integer, got '1\.5'"):
        radial.option_from_text("block_size", "1.5")
    assert radial.option_from_text("not_an_option", "1") == 1  # the constructor refuses it
