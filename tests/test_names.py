"""One table per fact: the accepted names map to the C enums of bpcore.h
by name, never by position, and the limits live in _limits only."""
import os
import re

import pytest

import bpcore
from bpcore import _core, _limits, _names

HEADER = os.path.join(os.path.dirname(__file__), "..", "csrc", "include",
                      "bpcore", "bpcore.h")


def _header_enums():
    """{C enum type name: {enumerator: value}} parsed from bpcore.h."""
    if not os.path.exists(HEADER):
        pytest.skip("the C sources are not beside the tests")
    text = open(HEADER).read()
    out = {}
    for body, name in re.findall(r"typedef enum \{(.*?)\}\s*(\w+);", text,
                                 re.S):
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        out[name] = {k: int(v) for k, v in
                     re.findall(r"(\w+)\s*=\s*(-?\d+)", body)}
    return out


TABLES = [
    ("bp_act", "BP_ACT_", _names.ACT_CODES, _names.OUTPUTS),
    ("bp_loss", "BP_LOSS_", _names.LOSS_CODES, _names.LOSSES),
    ("bp_opt_kind", "BP_OPT_", _names.OPT_CODES, _names.OPTIMIZERS),
]
# the C spelling of each name, written out here independently of _names
C_NAME = {"cross_entropy": "CE", "binary_cross_entropy": "BCE"}


@pytest.mark.parametrize("enum,prefix,codes,names", TABLES,
                         ids=[t[0] for t in TABLES])
def test_each_name_maps_to_the_c_enumerator_of_that_name(enum, prefix, codes,
                                                         names):
    values = _header_enums()[enum]
    assert set(codes) == set(names)
    for name in names:
        c_name = prefix + C_NAME.get(name, name.upper())
        assert codes[name] == values[c_name], (name, c_name)
        assert codes[name] == _core.C_ENUMS[c_name], (name, c_name)
    # every enumerator but the count has a name, and no two names share one
    real = {k: v for k, v in values.items() if not k.endswith("_COUNT")}
    assert sorted(codes.values()) == sorted(real.values())


def test_core_exposes_the_header_values():
    enums = _header_enums()
    for table in ("bp_act", "bp_loss", "bp_opt_kind"):
        for c_name, value in enums[table].items():
            assert _core.C_ENUMS[c_name] == value, c_name


def test_optimizers_carry_their_codes():
    for name, code in _names.OPT_CODES.items():
        opt = bpcore.optim.get_optimizer(name)
        assert opt._kind == code and opt._name == name


def test_limits_are_defined_once():
    """No module of the package writes a limit's number again."""
    src = os.path.join(os.path.dirname(__file__), "..", "src", "bpcore")
    if not os.path.isdir(src):  # an installed package: its .py files
        src = os.path.dirname(bpcore.__file__)
    pattern = re.compile(r"\b(2 ?\*\* ?48|1 << 48)\b|[<>]=? *(256|1024)\b")
    found = []
    for name in sorted(os.listdir(src)):
        if name == "_limits.py" or not name.endswith((".py", ".pyx")):
            continue
        for i, line in enumerate(open(os.path.join(src, name)), 1):
            code = line.split("#")[0]
            if pattern.search(code):
                found.append(f"{name}:{i}: {line.strip()}")
    assert not found, found
    assert _core.C_MAX_LAYERS == _limits.MAX_LAYERS
