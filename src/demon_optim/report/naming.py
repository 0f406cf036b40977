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
F+lr-warmup-linear     lr-warmup-linear    LR warm-up + linear (BERT's)
F+lr-exponential       lr-exponential      LR exponential
F+lr-plateau           lr-plateau          LR decay on plateau
F+onecycle             onecycle            OneCycle
F+mom-cosine           mom-cosine          cosine momentum
F+mom-linear ...       mom-linear ...      linear momentum ...
amsgrad, adamw         amsgrad, adamw      (reference optimizers)
muon, lion+lr-step...  muon, lion+lr-step  (today's baselines: references)
=====================  ==================  ========================

Each method declares its schedule name when it is registered (``register_method(...,
schedule=...)``; a user's method: its own name), and a store keeps it with every trial, so
a report needs no registry. A name from outside the registry (a column of a published table read by
``--from-csv``) is matched by one rule, :func:`canonical`: compared case-insensitively with
runs of white space as one space, a registered method name, a schedule name or one of the
paper's labels maps to the schedule name (``OneCycle``, ``onecycle`` and ``sgdm+onecycle``
are all ``onecycle``); any other name is kept as the user wrote it (``Cosine`` stays
``Cosine``), and :func:`key` still makes ``Cosine`` and ``cosine`` one method.

Names become file names and HTML ids only through :func:`file_stems`: injective (also on a
case-insensitive file system), bounded in length, and the name itself whenever it is
already a safe short name.

Reference optimizers (the paper's AggMo, QHM, QHAdam, YellowFin, AMSGrad, AdamW, and
today's Muon, Lion, Schedule-Free AdamW) are shown in the tables but left out of the
ranking unless asked (``--rank-all``): a registered method is a reference when the registry
says so (``Method.reference``); any other name when its base optimizer (the part before
``+``, e.g. ``qhm`` in ``qhm+lr-step``) is in :data:`REFERENCE_OPTIMIZERS`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

from demon_optim.study.methods import get_method, method_names

REFERENCE_OPTIMIZERS = frozenset(
    {"aggmo", "qhm", "qhadam", "yellowfin", "amsgrad", "adamw"}
    | {"muon", "demon-muon", "lion", "demon-lion", "schedulefree-adamw"}
)
"""Base optimizers reported beside the ranking but not in it (the one place): the paper's,
then today's baselines."""

FAMILY_ORDER = ("sgdm", "adam")
FAMILY_LABELS = {"sgdm": "SGDM", "adam": "Adam"}

LABELS = {
    "none": "none (constant lr)",
    "demon": "Demon",
    "lr-step": "LR step",
    "lr-cosine": "LR cosine",
    "lr-linear": "LR linear",
    "lr-warmup-linear": "LR warm-up + linear",
    "lr-exponential": "LR exponential",
    "lr-plateau": "LR decay on plateau",
    "onecycle": "OneCycle",
    "mom-onecycle": "OneCycle momentum",
    "mom-cosine": "cosine momentum",
    "mom-linear": "linear momentum",
    "mom-exponential": "exponential momentum",
}
"""The paper's names for the schedules (used in headings and the Top-k table)."""


def key(name: str) -> str:
    """How names are compared: case-insensitive, runs of white space as one space."""
    return " ".join(name.split()).casefold()


def _registered(name: str) -> str | None:
    """The registered method ``name`` denotes, compared by :func:`key`; None if none."""
    by_key = {key(m): m for m in method_names()}
    return by_key.get(key(name))


def schedule_name(method: str) -> str:
    """The schedule a registered method applies, the same for both families (table above);
    any other name unchanged. (A store's trials carry theirs: ``TrialAbout.schedule``.)

    >>> schedule_name("demon-adam"), schedule_name("sgdm+lr-cosine"), schedule_name("adam")
    ('demon', 'lr-cosine', 'none')
    """
    return get_method(method).schedule if method in method_names() else method


def canonical(name: str) -> str:
    """The Top-k name of a name from outside the registry (a published table's row).

    One rule for every name, compared by :func:`key` (any case, white space collapsed): a
    registered method maps to its schedule (``Demon-Adam`` -> ``demon``), a schedule name or
    one of the paper's labels to that schedule name (``OneCycle``, ``LR Cosine``); anything
    else is kept as written, white space collapsed (``Cosine`` stays ``Cosine``).

    >>> canonical("OneCycle"), canonical("SGDM+LR-Cosine"), canonical(" My  method ")
    ('onecycle', 'lr-cosine', 'My method')
    """
    registered = _registered(name)
    if registered is not None:
        return schedule_name(registered)
    known = {key(text): schedule for schedule, text in LABELS.items()}
    known.update({key(schedule): schedule for schedule in LABELS})
    return known.get(key(name), " ".join(name.split()))


def label(schedule: str) -> str:
    """The paper's label for a schedule name; other names unchanged."""
    return LABELS.get(schedule, schedule)


def is_reference(method: str) -> bool:
    """True for a reference optimizer, which stays outside the ranking unless asked (for a
    name from outside a store; a store's trials carry theirs: ``TrialAbout.reference``)."""
    registered = _registered(method)
    if registered is not None:
        return get_method(registered).reference or _base(registered) in REFERENCE_OPTIMIZERS
    return _base(method) in REFERENCE_OPTIMIZERS


def _base(method: str) -> str:
    return method.split("+", 1)[0].strip().lower()


def family_sort_key(name: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(name) if name in FAMILY_ORDER else len(FAMILY_ORDER), name)


# --- file names and HTML ids ------------------------------------------------------------------

STEM_CHARS = 64
"""At most this many readable characters in a file stem; with the hash, a stem has at most
STEM_CHARS + 11, so ``validation_<stem>.png`` stays far below the usual 255-byte limit."""
HASH_CHARS = 10  # hex digits of sha256 of the exact name (40 bits)

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def _readable(name: str) -> str:
    """ASCII letters, digits and ``._+-``; accents dropped, other runs as one ``_``; starts
    and ends with a letter or digit (no hidden file, no option, no ``..``)."""
    ascii_text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = _UNSAFE.sub("_", ascii_text)[:STEM_CHARS]
    return text.strip("._+-")


def _hashed(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    return f"{_readable(name) or 'x'}-{digest}"


def file_stem(name: str) -> str:
    """The file stem of one name on its own: the name itself when it is already safe (only
    ``A-Za-z0-9._+-``, at most :data:`STEM_CHARS`, starting and ending with a letter or
    digit, not a Windows device name); otherwise a readable slug plus ``-`` and a hash of the name.

    >>> file_stem("mnist1d-mlp_sgdm_10ep"), file_stem("a b")
    ('mnist1d-mlp_sgdm_10ep', 'a_b-c8687a08aa')
    """
    if _readable(name) == name and name and not _WINDOWS_RESERVED.match(name):
        return name
    return _hashed(name)


def file_stems(names: Sequence[str]) -> list[str]:
    """One stem per name (:func:`file_stem`), distinct even compared case-insensitively.

    Distinct names get distinct stems: a stem that another name's stem equals (in any case,
    e.g. ``A`` and ``a``, or a name that spells out another's hashed stem) is hashed too; a
    collision of hashes (40 bits), should one ever happen, gets a counter. Equal names get
    equal stems.
    """
    unique = list(dict.fromkeys(names))
    stems = {name: file_stem(name) for name in unique}
    for _ in range(2):  # round 2 only matters for a name spelling another's hashed stem
        by_fold: dict[str, list[str]] = {}
        for name in unique:
            by_fold.setdefault(stems[name].casefold(), []).append(name)
        clashes = [group for group in by_fold.values() if len(group) > 1]
        if not clashes:
            break
        for group in clashes:
            for name in group:
                stems[name] = _hashed(name)
    taken: set[str] = set()
    for name in unique:  # a hash collision: a counter keeps the stems apart
        stem, count = stems[name], 1
        while stem.casefold() in taken:
            count += 1
            stem = f"{stems[name]}-{count}"
        stems[name] = stem
        taken.add(stem.casefold())
    return [stems[name] for name in names]
