"""A run's options are checked in one place (`ppl.options`), for `ppl.sample` and for `.ppl` sample statements."""
import numpy as np
import pytest

import ppl
from ppl.options import check, check_names, check_values, expand, sample_options


def test_values_are_checked_and_converted_and_an_error_names_its_option():
    checked = check_values({"seed": np.int64(2), "particles": 10, "kernel": "hmc"})
    assert checked == {"seed": 2, "particles": 10, "kernel": "hmc"} and type(checked["seed"]) is int
    with pytest.raises(ppl.ValueRangeError, match="particles must be an integer >= 1") as e:
        check_values({"seed": 1, "particles": 0})
    assert e.value.option == "particles"


def test_names_are_the_methods_and_calls_expand_to_their_options():
    assert expand({"kernel": {"name": "hmc", "n_leapfrog": 5}, "runs": 2}) == \
        {"kernel": "hmc", "kernel_options": {"n_leapfrog": 5}, "runs": 2}
    assert check_names("smc", "model", {"seed": 1, "kernel": {"name": "mala"}}) == {"kernel": "mala"}
    with pytest.raises(ppl.UnknownNameError, match=r"method 'smc' has no option\(s\) kernal") as e:
        check_names("smc", "model", {"kernal": "hmc"})
    assert not hasattr(e.value, "option")
    with pytest.raises(ppl.UnknownNameError, match=r"has no option\(s\) resampler_options"):
        check_names("smc", "model", {"resampler": {"name": "systematic", "x": 1}})


def test_check_keeps_the_sample_options_and_returns_the_methods_expanded():
    assert {"seed", "particles", "precision", "runtime", "method"} <= sample_options()
    assert check("smc", "model", {"seed": 3, "method": "smc", "kernel": {"name": "hmc", "n_leapfrog": 3}}) == \
        {"seed": 3, "method": "smc", "kernel": "hmc", "kernel_options": {"n_leapfrog": 3}}


def test_an_option_given_as_none_is_the_methods_default_where_that_is_none():
    from ppl.backends import get_method
    from ppl.options import check_unset
    check_unset(get_method("pf", "sequence"), {"resample_threshold": None})   # chosen by the potential
    with pytest.raises(ppl.ValueRangeError, match=r"resample_threshold must be a number in \[0, 1\], got None") as e:
        check_unset(get_method("smc", "model"), {"resample_threshold": None})
    assert e.value.option == "resample_threshold"
