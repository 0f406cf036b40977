"""demon_optim._checks: each rule's accepted values, its refusals, and the field it names."""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest
import torch

from demon_optim import QHM, AggMo, DemonAdam, DemonSGD, QHAdam, YellowFin, _checks
from demon_optim.errors import ConfigError

HUGE = 10**400  # beyond float range: float(HUGE) raises OverflowError
NOT_REAL = [True, False, math.nan, math.inf, -math.inf, "1", "0.5", 1j, 0.5 + 0j, None, [0.5]]
"""Refused by every number rule: bools, NaN, infinities, strings, complex numbers, others."""


def refused(check, value, field: str = "the_field") -> str:
    with pytest.raises(ConfigError) as caught:
        check(field, value)
    message = str(caught.value)
    assert message.startswith(f"{field}: got {value!r}; allowed: "), message
    return message


# --- number ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0.0), (-3, -3.0), (2.5, 2.5), (np.float32(0.5), 0.5), (np.int64(7), 7.0),
     (fractions.Fraction(1, 4), 0.25), (2**1000, float(2**1000))],
)  # fmt: skip
def test_number_accepts_finite_reals_as_floats(value, expected) -> None:
    result = _checks.number("x", value, "reals")
    assert result == expected and type(result) is float


@pytest.mark.parametrize("value", [*NOT_REAL, HUGE, -HUGE, fractions.Fraction(HUGE)])
def test_number_refuses_what_is_not_a_finite_real(value) -> None:
    assert refused(lambda f, v: _checks.number(f, v, "reals"), value).endswith("allowed: reals")


def test_number_applies_ok_to_the_float() -> None:
    seen = []
    assert _checks.number("x", 3, "odd", lambda x: seen.append(x) or x == 3.0) == 3.0
    assert seen == [3.0] and type(seen[0]) is float
    refused(lambda f, v: _checks.number(f, v, "numbers > 4", lambda x: x > 4), 3)


# --- the number rules --------------------------------------------------------------------------

RULES = [
    # (check, allowed text, accepted values, refused values besides NOT_REAL and huge ints)
    (_checks.positive, "numbers > 0", [1e-300, 1, 2.5, 1e300], [0, 0.0, -0.0, -1e-9, -1]),
    (_checks.nonnegative, "finite numbers >= 0", [0, 0.0, -0.0, 1e-300, 3, 1e300], [-1e-9, -1]),
    (_checks.learning_rate, "finite numbers >= 0", [0, 0.0, 1e-3, 10], [-1e-9, -0.1]),
    (_checks.unit_interval, "numbers in [0, 1)", [0, 0.0, 0.5, 0.999999], [1, 1.0, -1e-9, 2]),
    (_checks.closed_unit_interval, "numbers in [0, 1]", [0, 0.5, 1, 1.0], [1.0000001, -0.1, 2]),
]


@pytest.mark.parametrize(("check", "allowed", "good", "bad"), RULES)
def test_number_rules_accept_their_values_as_floats(check, allowed, good, bad) -> None:
    for value in good:
        result = check("field", value)
        assert result == float(value) and type(result) is float


@pytest.mark.parametrize(("check", "allowed", "good", "bad"), RULES)
def test_number_rules_refuse_and_name_the_field(check, allowed, good, bad) -> None:
    for value in [*bad, *NOT_REAL, HUGE, -HUGE]:
        assert refused(check, value, "group.lr").endswith(f"allowed: {allowed}")


def test_lr_zero_is_allowed_as_in_torch() -> None:
    assert _checks.learning_rate("lr", 0) == 0.0
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0)  # torch agrees


@pytest.mark.parametrize("check", [_checks.nonnegative, _checks.learning_rate])
def test_tensors_only_with_tensor_ok(check) -> None:
    lr = torch.tensor(0.1)
    assert check("lr", lr, tensor_ok=True) is lr  # returned as it is
    assert check("lr", torch.tensor([0.0]), tensor_ok=True).item() == 0.0
    assert check("lr", 0.5, tensor_ok=True) == 0.5  # numbers still pass
    refused(check, lr)  # a tensor without tensor_ok
    allowed = "allowed: finite numbers >= 0 (or a one-element tensor)"
    for bad in [torch.tensor(-0.1), torch.tensor(math.nan), torch.tensor(math.inf),
                torch.tensor([0.1, 0.2]), torch.tensor([])]:  # fmt: skip
        with pytest.raises(ConfigError, match=r"^lr: got tensor\(") as caught:
            check("lr", bad, tensor_ok=True)
        assert str(caught.value).endswith(allowed)
    refused(lambda f, v: check(f, v, tensor_ok=True), math.nan, "lr")


# --- flag ----------------------------------------------------------------------------------------


def test_flag_takes_true_and_false_only() -> None:
    assert _checks.flag("maximize", True) is True
    assert _checks.flag("maximize", False) is False
    for value in [0, 1, 0.0, "False", "true", None, np.bool_(True), math.nan]:
        assert refused(_checks.flag, value, "maximize").endswith("allowed: True or False")


# --- integer -------------------------------------------------------------------------------------


def test_integer_accepts_ints_in_bounds() -> None:
    assert _checks.integer("n", 0, 0) == 0
    assert _checks.integer("n", HUGE, 0) == HUGE  # no upper bound unless given
    assert _checks.integer("n", 5, 1, 5) == 5
    result = _checks.integer("n", np.int64(3), 1, 5)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "allowed"),
    [(0, 1, None, "integers >= 1"), (-1, 0, None, "integers >= 0"), (6, 1, 5, "integers in [1, 5]"),
     (True, 0, None, "integers >= 0"), (False, 0, None, "integers >= 0"),
     (1.0, 0, None, "integers >= 0"), (math.nan, 0, None, "integers >= 0"),
     (math.inf, 0, None, "integers >= 0"), ("3", 0, None, "integers >= 0"),
     (1j, 0, None, "integers >= 0"), (HUGE, 0, 10, "integers in [0, 10]")],
)  # fmt: skip
def test_integer_refuses_and_names_the_bounds(value, minimum, maximum, allowed) -> None:
    message = refused(lambda f, v: _checks.integer(f, v, minimum, maximum), value, "seeds[2]")
    assert message.endswith(f"allowed: {allowed}")


def test_integer_takes_an_allowed_text() -> None:
    message = refused(lambda f, v: _checks.integer(f, v, 1, 10, "epochs up to 10"), 11, "epochs")
    assert message.endswith("allowed: epochs up to 10")


def test_step_counts_and_total_steps() -> None:
    assert _checks.step_count("step", 0) == 0
    assert _checks.total_steps("total_steps", 2**53) == 2**53
    for value in [-1, True, 1.0, math.nan, "1"]:
        assert refused(_checks.step_count, value, "last_step").endswith("integers >= 0")
    for value in [0, 2**53 + 1, HUGE, True, 10.0]:
        message = refused(_checks.total_steps, value, "total_steps")
        assert message.endswith("integers in [1, 2**53] (optimizer steps, not epochs)")


# --- pair ----------------------------------------------------------------------------------------


def test_pair() -> None:
    assert _checks.pair("betas", (0.9, 0.99), "pairs") == (0.9, 0.99)
    assert _checks.pair("betas", [1, "x"], "pairs") == (1, "x")  # the items are the caller's
    for value in [(0.9,), (0.9, 0.99, 0.999), 0.9, "ab", None, {0.9, 0.99}]:
        assert refused(lambda f, v: _checks.pair(f, v, "pairs"), value, "betas").endswith("pairs")


# --- the module's own promises --------------------------------------------------------------------


def test_every_public_check_takes_field_first() -> None:
    import inspect

    public = [
        getattr(_checks, name)
        for name in dir(_checks)
        if not name.startswith("_")
        and inspect.isfunction(getattr(_checks, name))
        and getattr(_checks, name).__module__ == _checks.__name__
    ]
    assert {f.__name__ for f in public} >= {
        "number", "positive", "nonnegative", "learning_rate", "unit_interval",
        "closed_unit_interval", "flag", "integer", "pair", "step_count", "total_steps",
    }  # fmt: skip
    for f in public:
        assert list(inspect.signature(f).parameters)[:2] == ["field", "value"], f.__name__


def test_schedules_wrappers_keep_their_order_and_messages() -> None:
    from demon_optim import schedules

    assert schedules.check_step(3) == 3
    assert schedules.check_total_steps(10, "T") == 10
    assert schedules.check_momentum(0.9) == 0.9
    assert schedules.check_fraction(0.25, "delay") == 0.25
    assert schedules.MAX_TOTAL_STEPS == _checks.MAX_TOTAL_STEPS == 2**53
    with pytest.raises(ConfigError, match=r"^T: got 0; allowed: integers in \[1, 2\*\*53\]"):
        schedules.check_total_steps(0, "T")
    with pytest.raises(ConfigError, match=r"^beta_init: got 1\.0; allowed: numbers in \[0, 1\)$"):
        schedules.check_momentum(1.0)


# --- the optimizers and the scheduler check through _checks ----------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [(lambda p: DemonSGD(p, lr=HUGE, total_steps=10), "lr"),
     (lambda p: DemonSGD(p, momentum=HUGE, total_steps=10), "momentum"),
     (lambda p: DemonAdam(p, weight_decay=HUGE, total_steps=10), "weight_decay"),
     (lambda p: QHM(p, lr=HUGE), "lr"), (lambda p: QHM(p, nu=HUGE), "nu"),
     (lambda p: QHAdam(p, eps=HUGE), "eps"), (lambda p: AggMo(p, lr=-HUGE), "lr"),
     (lambda p: YellowFin(p, eps=HUGE), "eps")],
)  # fmt: skip
def test_optimizers_refuse_huge_ints_with_config_error(make, field) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}: got -?1000"):  # was OverflowError
        make([torch.zeros(2, requires_grad=True)])


def test_yellowfin_window_is_stored_as_an_int() -> None:
    opt = YellowFin([torch.zeros(2, requires_grad=True)], curv_win_width=np.int64(5))
    assert type(opt.tuner["curv_win_width"]) is int
