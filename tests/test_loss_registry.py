"""A named loss is its conf/loss/<name>.yaml: the members' files, the aliases, the docs' family table and
the docs' worked example of adding a loss all agree with that and with the catalog."""

import math
import re
from fractions import Fraction

import pytest
import torch
import yaml
from hydra.utils import instantiate

from gpo_lab.losses import catalog, gpo
from gpo_lab.losses.base import PreferenceLoss
from gpo_lab.losses.catalog import ALIASES, EXACT_DERIVATIVES, FIELD_LOSSES, GPO_MEMBERS
from gpo_lab.losses.function_check import InvalidGPOLoss, check_gpo_function
from gpo_lab.losses.gpo import MEMBER_FUNCTIONS, GPOLoss
from gpo_lab.losses.named_losses import build_loss, loss_config, needs_nonconvex_switch
from tests.helpers import CONF_DIR, ROOT
from tests.helpers.runs import compose_config

DOCS = ROOT / "docs" / "losses.md"
LOSS_YAML = {"_target_": "gpo_lab.losses.gpo.GPOLoss"}


def autograd_at_zero(f) -> tuple[float, float, float]:
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    value = f(z)
    (first,) = torch.autograd.grad(value, z, create_graph=True)
    second = torch.autograd.grad(first, z)[0] if first.requires_grad else torch.zeros(())
    return value.item(), first.item(), second.item()


def test_the_yaml_files_are_the_members_custom_and_the_field():
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF_DIR / "loss").glob("*.yaml")}
    assert files.pop("custom") == {**LOSS_YAML, "fn": "???"}
    assert {name: files.pop(name) for name in GPO_MEMBERS} == {name: {**LOSS_YAML, "fn": name} for name in GPO_MEMBERS}
    assert sorted(files) == list(FIELD_LOSSES)


@pytest.mark.parametrize("name", ["custom", *GPO_MEMBERS, *FIELD_LOSSES])
def test_every_loss_option_is_a_preference_loss(name):
    overrides = {"fn": "tests.test_losses.scaled_logistic"} if name == "custom" else {}
    if needs_nonconvex_switch(name):
        overrides["allow_nonconvex"] = True
    loss = build_loss(name, **overrides)
    assert isinstance(loss, PreferenceLoss)
    assert loss.on_rho == (loss.derivatives is not None)


@pytest.mark.parametrize("alias,name", sorted(ALIASES.items()))
def test_every_alias_composes_as_its_member(alias, name):
    assert not (CONF_DIR / "loss" / f"{alias}.yaml").exists()  # stored in Hydra's ConfigStore, not written by hand
    assert compose_config([f"loss={alias}"]).loss == compose_config([f"loss={name}"]).loss
    assert GPOLoss(alias).name == name and loss_config(alias) == loss_config(name)


def test_the_member_functions_are_the_papers_in_its_order():
    assert tuple(MEMBER_FUNCTIONS) == GPO_MEMBERS
    for name, function in MEMBER_FUNCTIONS.items():
        assert getattr(gpo, name) is function  # importable by its table name
        assert GPOLoss(name).derivatives is EXACT_DERIVATIVES[name]  # a member is trusted, not measured


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(InvalidGPOLoss) as error:
        GPOLoss("nope")
    assert f"Valid names: {', '.join(sorted(GPO_MEMBERS) + sorted(ALIASES))};" in str(error.value)
    with pytest.raises(KeyError, match="the loss options are: .*cdpo"):
        build_loss("nope")


# ----------------------------------------------------------------------------- docs/losses.md
def doc_section(title: str) -> str:
    text = DOCS.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def code_blocks(text: str, language: str) -> list[str]:
    blocks = re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)
    return [re.sub(r"^ {3}", "", block, flags=re.MULTILINE) for block in blocks]  # a list item's blocks are indented


def number(text: str) -> float:
    text = text.strip()
    return math.log(float(text.removeprefix("log "))) if text.startswith("log ") else float(Fraction(text))


def test_the_docs_family_table_is_the_catalog():
    rows = [
        re.split(r"(?<!\\)\|", line)[1:-1] for line in doc_section("The family").splitlines() if line.startswith("| `")
    ][1:]  # after the header
    assert [row[0].strip().strip("`") for row in rows] == list(GPO_MEMBERS)
    for name, formula, known_as, f0, d1, d2, ratio in rows:
        name = name.strip().strip("`")
        assert re.findall(r"`loss=(\w+)`", known_as) == [a for a, n in ALIASES.items() if n == name]
        d = EXACT_DERIVATIVES[name]
        assert [number(v) for v in (f0, d1, d2, ratio)] == pytest.approx([d.f0, d.d1, d.d2, d.regularization_ratio])
        function = MEMBER_FUNCTIONS[name]
        assert function.__doc__.startswith(formula.strip())
        closed_form = formula.strip().replace("^", "**")
        for z in (-2.0, -0.5, 0.0, 0.7, 3.0):
            expected = eval(closed_form, {"exp": math.exp, "log": math.log, "max": max, "z": z})
            assert function(torch.tensor(z, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


def test_the_docs_example_of_adding_a_loss_works(monkeypatch, tmp_path):
    """The two steps of the docs, run as written: the function, then the yaml file (in a copy of conf/loss/)."""
    section = doc_section("Adding a loss to the family")
    (function_code,) = code_blocks(section, "python")
    (config_text,) = code_blocks(section, "yaml")
    namespace = {"torch": torch}
    exec(function_code, namespace)  # noqa: S102
    monkeypatch.setattr(gpo, "pseudo_huber", namespace["pseudo_huber"], raising=False)
    (tmp_path / "pseudo_huber.yaml").write_text(config_text)
    monkeypatch.setattr(catalog, "LOSS_CONFIG_DIR", tmp_path)

    card = catalog.loss_card("pseudo_huber")
    assert namespace["pseudo_huber"].__doc__.startswith(card.formula) and card.paper
    loss = instantiate(yaml.safe_load(config_text))
    assert isinstance(loss, GPOLoss) and loss.name == "pseudo_huber"
    rho = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    expected = [math.sqrt(1 + (0.5 * r - 1) ** 2) for r in (2.0, -1.0, 0.0)]
    torch.testing.assert_close(loss.per_example(rho, beta=0.5), torch.tensor(expected, dtype=torch.float64))
    # f(0) = sqrt 2, f'(0) = -1/sqrt 2, f''(0) = 1/(2 sqrt 2), by hand: f''(0)/|f'(0)| = 1/2
    d = loss.derivatives
    expected_derivatives = (math.sqrt(2), -1 / math.sqrt(2), 1 / (2 * math.sqrt(2)))
    assert (d.f0, d.d1, d.d2) == pytest.approx(expected_derivatives, rel=1e-6)
    assert d.regularization_ratio == pytest.approx(0.5, rel=1e-6)
    check_gpo_function("pseudo_huber", loss.function)  # it really is a GPO loss
