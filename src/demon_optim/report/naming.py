"""How methods are named across families, and which ones stay outside the ranking.

The paper ranks the SGDM-family schedules within each SGDM setting and the Adam-family ones
within each Adam setting, then adds the counts up *by schedule*: "Demon" counts Demon SGDM's
wins and Demon Adam's, "LR cosine" those of SGDM + LR cosine and Adam + LR cosine. So the
Top-1/Top-3 table is keyed by :func:`schedule_name`, which maps a registered method to the
schedule it applies, whatever its base optimizer:

=====================  ==================  ========================
method (sgdm / adam)   schedule name       the paper's label
=====================  ==================  ========================
sgdm, adam             none                none (constant lr)
demon-sgdm / -adam     demon               Demon
F+lr-step              lr-step             LR step
F+lr-cosine            lr-cosine           LR cosine
F+lr-linear            lr-linear           LR linear
F+lr-exponential       lr-exponential      LR exponential
F+lr-plateau           lr-plateau          LR decay on plateau
F+onecycle             onecycle            OneCycle
F+mom-cosine           mom-cosine          cosine momentum
F+mom-linear ...       mom-linear ...      linear momentum ...
amsgrad, adamw         amsgrad, adamw      (reference optimizers)
=====================  ==================  ========================

The mapping is derived from each method's registered components (optimizer, lr schedule,
momentum schedule), not from its name, so a new registered method maps without a new line
here. Names that are not registered (a column of a published table read by ``--from-csv``)
map to themselves, except that a registered method name still maps to its schedule.

Reference optimizers (the paper's AggMo, QHM, QHAdam, YellowFin, AMSGrad, AdamW) are shown
in the tables but left out of the ranking unless asked (``--rank-all``): a registered
method is a reference when the registry says so (``Method.reference``); any other name when
its base optimizer (the part before ``+``, e.g. ``qhm`` in ``qhm+lr-step``) is in
:data:`REFERENCE_OPTIMIZERS`.
"""

from __future__ import annotations

from demon_optim.study.methods import get_method, method_names

REFERENCE_OPTIMIZERS = frozenset({"aggmo", "qhm", "qhadam", "yellowfin", "amsgrad", "adamw"})
"""Base optimizers the paper reports beside its ranking but not in it (the one place)."""

FAMILY_ORDER = ("sgdm", "adam")
FAMILY_LABELS = {"sgdm": "SGDM", "adam": "Adam"}

LABELS = {
    "none": "none (constant lr)",
    "demon": "Demon",
    "lr-step": "LR step",
    "lr-cosine": "LR cosine",
    "lr-linear": "LR linear",
    "lr-exponential": "LR exponential",
    "lr-plateau": "LR decay on plateau",
    "onecycle": "OneCycle",
    "mom-onecycle": "OneCycle momentum",
    "mom-cosine": "cosine momentum",
    "mom-linear": "linear momentum",
    "mom-exponential": "exponential momentum",
}
"""The paper's names for the schedules (used in headings and the Top-k table)."""


def is_registered(method: str) -> bool:
    return method in method_names()


def schedule_name(method: str) -> str:
    """The schedule a method applies, the same for both families (table above).

    >>> schedule_name("demon-adam"), schedule_name("sgdm+lr-cosine"), schedule_name("adam")
    ('demon', 'lr-cosine', 'none')
    """
    if not is_registered(method):
        return method
    entry = get_method(method)
    if entry.reference:
        return entry.name
    if entry.momentum_schedule == "demon":
        return "demon"
    if entry.lr_schedule == "onecycle":
        return "onecycle"
    if entry.lr_schedule != "constant":
        return f"lr-{entry.lr_schedule}"
    if entry.momentum_schedule != "constant":
        return f"mom-{entry.momentum_schedule}"
    return "none"


def canonical(name: str) -> str:
    """The Top-k key of a name from outside the registry (a published table's row).

    A registered method maps to its schedule, one of the paper's labels (any case, e.g.
    ``LR cosine``) to its schedule name, anything else to itself (stripped).
    """
    name = name.strip()
    if is_registered(name):
        return schedule_name(name)
    by_label = {text.lower(): key for key, text in LABELS.items()}
    by_label.update({key: key for key in LABELS})
    return by_label.get(name.lower(), name)


def label(schedule: str) -> str:
    """The paper's label for a schedule name; other names unchanged."""
    return LABELS.get(schedule, schedule)


def family(method: str) -> str:
    """``sgdm`` or ``adam`` for a registered method (the family the paper ranks within)."""
    return get_method(method).family


def is_reference(method: str) -> bool:
    """True for a reference optimizer, which stays outside the ranking unless asked."""
    if is_registered(method):
        return get_method(method).reference or _base(method) in REFERENCE_OPTIMIZERS
    return _base(method) in REFERENCE_OPTIMIZERS


def _base(method: str) -> str:
    return method.split("+", 1)[0].strip().lower()


def family_sort_key(name: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(name) if name in FAMILY_ORDER else len(FAMILY_ORDER), name)
