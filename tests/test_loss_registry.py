"""The loss registry is the one list of losses: its yaml files, its aliases, the docs' table and
the docs' worked example of adding a member all agree with it."""

import math
import re
from fractions import Fraction

import pytest
import torch
import yaml

from gpo_lab import losses
from gpo_lab.losses import ALIASES, MEMBERS, GPOLoss, GPOMember, InvalidGPOLoss, check_gpo_function
from gpo_lab.report import bandit, figures
from tests.helpers import CONF_DIR, ROOT
from tests.helpers.runs import compose_config

DOCS = ROOT / "docs" / "losses.md"
LOSS_YAML = {"_target_": "gpo_lab.losses.GPOLoss"}


def autograd_at_zero(f) -> tuple[float, float, float]:
    z = torch.zeros((), dtype=torch.float64, requires_grad=True)
    value = f(z)
    (first,) = torch.autograd.grad(value, z, create_graph=True)
    second = torch.autograd.grad(first, z)[0] if first.requires_grad else torch.zeros(())
    return value.item(), first.item(), second.item()


def test_every_member_has_its_yaml_and_every_yaml_is_a_member():
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF_DIR / "loss").glob("*.yaml")}
    assert files.pop("custom") == {**LOSS_YAML, "fn": "???"}
    for name in losses.FIELD:  # the rest of the field, checked in tests/test_field_losses.py
        files.pop(name)
    assert files == {name: {**LOSS_YAML, "fn": name} for name in MEMBERS}


@pytest.mark.parametrize("alias,name", sorted(ALIASES.items()))
def test_every_alias_composes_as_its_member(alias, name):
    assert not (CONF_DIR / "loss" / f"{alias}.yaml").exists()  # stored from the registry, not written by hand
    assert compose_config([f"loss={alias}"]).loss == compose_config([f"loss={name}"]).loss
    assert GPOLoss(alias).name == name


@pytest.mark.parametrize("name", list(MEMBERS))
def test_exact_derivatives_are_the_functions_own(name):
    member = MEMBERS[name]
    d = member.derivatives
    assert autograd_at_zero(member.function) == pytest.approx((d.f0, d.d1, d.d2), abs=1e-12)
    assert losses.EXACT_DERIVATIVES[name] is d and losses.BUILTIN_FUNCTIONS[name] is member.function
    assert getattr(losses, name) is member.function  # importable by its table name


def test_every_list_of_losses_is_the_registrys():
    assert figures.PAPER_LOSSES == tuple(MEMBERS) == tuple(bandit.LOSS_ORDER)
    styles = bandit._styles([bandit.BanditRun(name, 1.0, "bradley_terry", "partial", 0.0, {}) for name in MEMBERS])
    assert [s["linestyle"] for s in styles.values()] == [m.linestyle for m in MEMBERS.values()]
    with pytest.raises(InvalidGPOLoss) as error:
        GPOLoss("nope")
    assert f"Valid names: {', '.join(sorted(MEMBERS) + sorted(ALIASES))};" in str(error.value)


def test_a_registered_name_cannot_be_taken_twice():
    with pytest.raises(ValueError, match="dpo"):
        losses.register(GPOMember("new", losses.logistic, MEMBERS["logistic"].derivatives, "GPO", ("dpo",)))
    assert "new" not in MEMBERS


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


def test_the_docs_table_is_the_registry():
    rows = [
        re.split(r"(?<!\\)\|", line)[1:-1] for line in doc_section("The family").splitlines() if line.startswith("| `")
    ][1:]  # after the header
    assert [row[0].strip().strip("`") for row in rows] == list(MEMBERS)
    for name, formula, known_as, f0, d1, d2, ratio in rows:
        member = MEMBERS[name.strip().strip("`")]
        aliases = ", ".join(f"`loss={a}`" for a in member.aliases)
        assert known_as.strip() == (f"{member.known_as} ({aliases})" if aliases else member.known_as)
        d = member.derivatives
        assert [number(v) for v in (f0, d1, d2, ratio)] == pytest.approx([d.f0, d.d1, d.d2, d.regularization_ratio])
        assert member.function.__doc__.startswith(formula.strip())
        closed_form = formula.strip().replace("^", "**")
        for z in (-2.0, -0.5, 0.0, 0.7, 3.0):
            expected = eval(closed_form, {"exp": math.exp, "log": math.log, "max": max, "z": z})
            assert member.function(torch.tensor(z, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


def test_the_docs_example_of_adding_a_loss_works(monkeypatch):
    function_code, entry_code = code_blocks(doc_section("Adding a loss to the family"), "python")
    (config,) = code_blocks(doc_section("Adding a loss to the family"), "yaml")
    namespace = {"torch": torch, "math": math, "GPOMember": GPOMember, "Derivatives": losses.Derivatives}
    exec(function_code, namespace)  # noqa: S102
    (member,) = eval(entry_code, namespace)  # an entry of the MEMBERS tuple
    monkeypatch.setattr(losses, "MEMBERS", dict(MEMBERS))
    losses.register(member)

    assert yaml.safe_load(config) == {**LOSS_YAML, "fn": member.name}
    loss = GPOLoss("smooth_hinge")
    assert loss.name == "pseudo_huber" and loss.derivatives is member.derivatives
    rho = torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64)
    expected = sum(math.sqrt(1 + (0.5 * r - 1) ** 2) for r in (2.0, -1.0, 0.0)) / 3
    assert loss(rho, beta=0.5).item() == pytest.approx(expected, rel=1e-12)
    d = member.derivatives
    assert autograd_at_zero(member.function) == pytest.approx((d.f0, d.d1, d.d2), abs=1e-12)
    numerical = losses.numerical_derivatives(member.function)
    assert (d.f0, d.d1, d.d2) == pytest.approx((numerical.f0, numerical.d1, numerical.d2), rel=1e-5)
    assert d.regularization_ratio == pytest.approx(0.5)
    check_gpo_function(member.name, member.function)  # it really is a GPO loss
    with pytest.raises(InvalidGPOLoss, match="pseudo_huber, .*smooth_hinge"):
        GPOLoss("pseudo_hubr")
