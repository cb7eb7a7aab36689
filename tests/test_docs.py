"""The documentation matches the tree: every config group and option is in the group table of
docs/configuration.md (and it names no other), README.md and docs/ stay short, README.md keeps the
fresh-machine commands, and every relative link of README.md and docs/*.md points to an existing file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpo_lab.losses.catalog import ALIASES

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DOCS = ROOT / "docs"
README = ROOT / "README.md"
CONFIGURATION = DOCS / "configuration.md"
TABLE_HEADING = "## Config groups"

README_LIMIT = 10_240  # bytes
DOCS_WORD_LIMIT = 12_500  # words of docs/*.md together, counted as str.split counts them
# The two commands of "On a fresh machine": CI runs the test command as it is written in README.md.
FRESH_MACHINE_COMMANDS = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e . && python -m gpo_lab -m "
    "--config-dir sweeps --config-name synthetic_small && python -m gpo_lab.report multirun/synthetic_small",
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e '.[dev]' && python -m pytest",
)
# Loss aliases are registered in Hydra's ConfigStore from the loss registry, not yaml files.
CONFIG_STORE_OPTIONS = {"loss": set(ALIASES)}
# conf/hydra/ holds overrides of Hydra's own groups, not gpo_lab options.
NOT_GROUPS = {"hydra"}
# Option names the docs use as placeholders for a file the reader creates (cluster=mysite, and the
# worked example of docs/losses.md that adds a loss).
HYPOTHETICAL_OPTIONS = {"mysite", "pseudo_huber", "smooth_hinge"}


def config_groups() -> dict[str, set[str]]:
    """Every group folder of conf/ with its options; files named ``_*`` are shared bases."""
    groups = {}
    for folder in sorted(p for p in CONF.iterdir() if p.is_dir()):
        if folder.name.startswith("_") or folder.name in NOT_GROUPS:
            continue
        groups[folder.name] = {p.stem for p in folder.glob("*.yaml") if not p.name.startswith("_")}
    for group, names in CONFIG_STORE_OPTIONS.items():
        groups.setdefault(group, set()).update(names)
    return groups


def section(text: str, heading: str) -> str:
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def documented_options() -> dict[str, set[str]]:
    """(group, option) pairs of the group table: rows ``| `group/` | `option` | ... |``."""
    table: dict[str, set[str]] = {}
    for line in section(CONFIGURATION.read_text(), TABLE_HEADING).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3:
            continue
        group, option = (re.fullmatch(r"`([^`]+)`", cell) for cell in cells[:2])
        if group and option:
            table.setdefault(group.group(1).rstrip("/"), set()).add(option.group(1))
    return table


def test_the_group_table_lists_every_group_and_option_and_nothing_else():
    actual, documented = config_groups(), documented_options()
    assert actual, "no config groups found under conf/"
    missing = {g: sorted(o - documented.get(g, set())) for g, o in actual.items() if o - documented.get(g, set())}
    unknown = {g: sorted(o - actual.get(g, set())) for g, o in documented.items() if o - actual.get(g, set())}
    assert not missing, f"options missing from the table of {CONFIGURATION.name}: {missing}"
    assert not unknown, f"the table of {CONFIGURATION.name} names options that do not exist: {unknown}"


def test_readme_is_short_and_keeps_the_fresh_machine_commands():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; keep it at most {README_LIMIT} and move the rest to docs/"
    lines = [line.strip() for line in README.read_text().splitlines()]
    for command in FRESH_MACHINE_COMMANDS:
        assert command in lines, f"README.md lost the command: {command}"


def test_the_docs_stay_short():
    counts = {path.name: len(path.read_text().split()) for path in sorted(DOCS.glob("*.md"))}
    assert counts, "no pages found under docs/"
    total = sum(counts.values())
    assert total <= DOCS_WORD_LIMIT, (
        f"docs/*.md hold {total} words (limit {DOCS_WORD_LIMIT}): {counts}; cut repetition rather than facts"
    )


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def relative_links(text: str) -> list[tuple[str, str]]:
    """(file, anchor) of every ``[text](target)`` link outside code; URLs left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    links = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            file, _, anchor = target.partition("#")
            links.append((file, anchor))
    return links


def heading_anchors(path: Path) -> set[str]:
    """The anchors a Markdown renderer gives the headings of ``path`` (GitHub's rule)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(path):
    broken = []
    for file, anchor in relative_links(path.read_text()):
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(file)
        elif anchor and resolved.suffix == ".md" and anchor not in heading_anchors(resolved):
            broken.append(f"{file}#{anchor}")
    assert not broken, f"{path.relative_to(ROOT)} links to missing files or headings: {broken}"


# group=option references, e.g. loss=hinge or +experiment=smoke,bandit; upper-case names (NAME) are placeholders.
OPTION_REFERENCE = re.compile(r"(?<![\w./-])\+{0,2}(%s)=([a-z_]\w*(?:,[a-z_]\w*)*)")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_group_option_the_docs_name_exists(path):
    groups = config_groups()
    pattern = re.compile(OPTION_REFERENCE.pattern % "|".join(map(re.escape, groups)))
    unknown = sorted(
        {
            f"{group}={option}"
            for group, options in pattern.findall(path.read_text())
            for option in options.split(",")
            if option not in groups[group] and option not in HYPOTHETICAL_OPTIONS
        }
    )
    assert not unknown, f"{path.relative_to(ROOT)} names options that do not exist: {unknown}"


def test_every_sweep_file_the_docs_name_exists():
    names = {name for path in markdown_files() for name in re.findall(r"--config-name ([a-z_]\w*)", path.read_text())}
    assert names, "the docs name no sweep file"
    assert sorted(n for n in names if not (ROOT / "sweeps" / f"{n}.yaml").is_file()) == []
