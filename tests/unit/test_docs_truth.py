"""The README and docs/ against the code: every `rfidd ...` command and option they show exists
and every command is shown; every `rfidd_...` metric they (and the shipped rules and dashboard)
name is registered with the labels written, and every registered one is listed where a user
looks; every config key named exists, every key is in an example or the docs, and the examples
pass check-config; the paging table holds every shipped rule. Drift here is a user typing what
does not exist, or not finding what does."""

from __future__ import annotations

import ast
import re
import shlex
import typing
from pathlib import Path

import click
import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The shipped alert rules and dashboard query metrics by name too.
DEPLOYED = sorted(p for p in (ROOT / "deploy").rglob("*") if p.suffix in (".yml", ".yaml", ".json"))
# Names of that shape that are not metrics: a database in the HQ bench's example.
NOT_METRICS = {"rfidd_bench_10m"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created", "_info")


def _spans(text: str) -> list[str]:
    """Inline code spans and the lines of fenced blocks."""
    out = [m.group(1) for m in re.finditer(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text,
                                                                        flags=re.S))]
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        out.extend(block.splitlines())
    return out


def _invocations() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        for span in _spans(doc.read_text()):
            for m in re.finditer(r"(?:^|[\s;(&|$])(?:/opt/rfidd/bin/|\.venv/bin/)?rfidd"
                                 r"((?:\s+[^\s;|&)]+)*)", span):
                found.append((doc.name, "rfidd" + m.group(1)))
    return found


def _resolve(words: list[str]) -> tuple[click.Command, list[str], list[str]]:
    from rfidd.cli import main

    cmd: click.Command = main
    path = ["rfidd"]
    rest = words[1:]
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), rest[0])
        if sub is None:
            break
        cmd, path, rest = sub, [*path, rest[0]], rest[1:]
    return cmd, path, rest


def _options(cmd: click.Command) -> set[str]:
    opts = {"--help"}
    for p in cmd.params:
        if isinstance(p, click.Option):
            opts.update(p.opts, p.secondary_opts)
    return opts


def test_every_documented_command_and_option_exists() -> None:
    wrong: list[str] = []
    for doc, line in _invocations():
        try:
            words = shlex.split(line.replace("\\|", "|"), comments=False)
        except ValueError:
            words = line.split()
        cmd, path, rest = _resolve(words)
        if isinstance(cmd, click.Group) and rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
            wrong.append(f"{doc}: `{line}`: no command {' '.join(path)} {rest[0]}")
            continue
        for w in rest:
            if w.startswith("--"):
                opt = w.split("=", 1)[0]
                if opt not in _options(cmd):
                    wrong.append(f"{doc}: `{line}`: {' '.join(path)} has no {opt}")
    assert not wrong, "\n".join(wrong)


def _leaf_commands() -> list[list[str]]:
    from rfidd.cli import main

    out: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(click.Context(cmd)):
                sub = cmd.get_command(click.Context(cmd), name)
                if sub is not None and not sub.hidden:
                    walk(sub, [*path, name])
        else:
            out.append(path)

    walk(main, ["rfidd"])
    return out


def test_every_command_is_documented() -> None:
    """Named in full, or as `name ...` on a line that names its group (`rfidd alerts list` /
    `ack ID`)."""
    lines = [ln for doc in DOCS for ln in doc.read_text().splitlines()]
    missing = []
    for path in _leaf_commands():
        full, group, name = " ".join(path), " ".join(path[:-1]), path[-1]
        if not any(full in ln or (group + " " in ln and re.search(rf"`{name}\b", ln))
                   for ln in lines):
            missing.append(full)
    assert not missing, "documented nowhere: " + ", ".join(missing)


def _registered_metrics() -> dict[str, tuple[str, ...]]:
    """Every metric the code registers (the daemon's, the lifecycle's, HQ's) with its labels,
    read from the source: several registries exist only inside a running component."""
    found: dict[str, tuple[str, ...]] = {}
    for src in sorted((ROOT / "rfidd").rglob("*.py")):
        for node in ast.walk(ast.parse(src.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("Counter", "Gauge", "Histogram") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                continue
            labels: tuple[str, ...] = ()
            given = node.args[2] if len(node.args) > 2 else next(
                (k.value for k in node.keywords if k.arg == "labelnames"), None)
            if isinstance(given, (ast.List, ast.Tuple)):
                labels = tuple(str(e.value) for e in given.elts if isinstance(e, ast.Constant))
            name = node.args[0].value
            full = name if name.startswith("rfidd_") else f"rfidd_{name}"
            found[full + ("_total" if node.func.id == "Counter" else "")] = labels
    return found


def _documented_metrics() -> list[tuple[str, str, str | None]]:
    """(doc, name, labels as written or None) of every rfidd_ metric name in the docs."""
    out = []
    for doc in [*DOCS, *DEPLOYED]:
        for m in re.finditer(r"\b(rfidd_[a-z0-9_]*[a-z0-9])(\{[^}]*\})?", doc.read_text()):
            if m.group(1) not in NOT_METRICS:
                out.append((doc.name, m.group(1), m.group(2)))
    return out


def _family(name: str, known: dict[str, tuple[str, ...]]) -> str | None:
    if name in known:
        return name
    for s in SUFFIXES:
        base = name.removesuffix(s)
        if base != name and (base in known or base + "_total" in known):
            return base if base in known else base + "_total"
    return None


def test_the_metric_source_parse_finds_what_the_daemon_registers() -> None:
    from rfidd.metrics import Metrics

    known = _registered_metrics()
    for m in Metrics().registry.collect():
        name = m.name + ("_total" if m.type == "counter" else "")
        assert name in known, name


def test_every_documented_metric_is_registered_with_its_labels() -> None:
    known = _registered_metrics()
    wrong = []
    for doc, name, labels in _documented_metrics():
        fam = _family(name, known)
        if fam is None:
            wrong.append(f"{doc}: {name} is registered nowhere")
        elif labels is not None and "=" not in labels:
            written = tuple(w.strip() for w in labels.strip("{}").split(","))
            if set(written) != set(known[fam]):
                wrong.append(f"{doc}: {name}{labels}: its labels are {{{','.join(known[fam])}}}")
        elif labels is not None:
            for key in re.findall(r"([a-z_]+)=", labels):
                if key not in known[fam] and key not in TARGET_LABELS:
                    wrong.append(f"{doc}: {name}{labels}: no label {key}")
    assert not wrong, "\n".join(wrong)


def test_every_metric_is_listed_where_a_user_looks() -> None:
    """The site's metrics in the README; HQ's in the README or docs/hq-deployment.md."""
    readme = (ROOT / "README.md").read_text()
    hq = readme + (ROOT / "docs" / "hq-deployment.md").read_text()
    missing = [n for n in _registered_metrics()
               if not re.search(rf"\b{n}\b", hq if n.startswith("rfidd_hq_") else readme)]
    assert not missing, "not listed: " + ", ".join(sorted(missing))


def test_every_shipped_alert_rule_is_in_the_paging_table_and_no_other() -> None:
    rules = set(re.findall(r"- alert: (\w+)", (ROOT / "deploy/prometheus/rfidd.rules.yml")
                           .read_text()))
    ops = (ROOT / "docs" / "operations.md").read_text()
    named = {n for doc in DOCS for n in re.findall(r"\bRfidd[A-Z]\w+", doc.read_text())}
    assert rules and not {r for r in rules if r not in ops}, "rules missing in operations.md"
    assert not named - rules, f"named in the docs, no such rule: {sorted(named - rules)}"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key path of a configuration model, sub-tables' included."""
    def models(t: object) -> list[type[BaseModel]]:
        if isinstance(t, type) and issubclass(t, BaseModel):
            return [t]
        return [m for a in typing.get_args(t) for m in models(a)]

    out = []
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        out.append(path)
        for sub in models(field.annotation):
            out.extend(_keys(sub, path + "."))
    return out


@pytest.mark.parametrize("name", ["rfidd.example.toml", "hq.example.toml"])
def test_every_config_key_is_in_the_example_or_the_docs(name: str) -> None:
    from rfidd.config import Config
    from rfidd.hq.config import HqConfig

    model = HqConfig if name.startswith("hq") else Config
    text = (ROOT / "config" / name).read_text() + "".join(d.read_text() for d in DOCS)
    missing = [k for k in _keys(model)
               if not re.search(rf"\b{re.escape(k.rsplit('.', 1)[-1])}\b", text)]
    assert not missing, f"keys neither in {name} nor in the docs: {missing}"


def test_every_documented_config_key_exists() -> None:
    """`section.key` and `[section] key` in the docs name a key of the site's or HQ's model."""
    from rfidd.config import Config
    from rfidd.hq.config import HqConfig

    keys = set(_keys(Config)) | set(_keys(HqConfig))
    tops = {k.split(".")[0] for k in keys}
    wrong = []
    for doc in DOCS:
        text = doc.read_text()
        named = [m.group(1) for m in re.finditer(r"`([a-z_]+(?:\.[a-z_0-9-]+)+)(?: = [^`]*)?`",
                                                  text)]
        named += [f"{a}.{b}" for a, b in re.findall(r"`\[([a-z_.-]+)\] ([a-z_]+)", text)]
        for key in named:
            model_key = re.sub(r"^(readers|zones)\.[^.]+", r"\1", key)
            if key.split(".")[0] in tops and not key.endswith(".py") and model_key not in keys:
                wrong.append(f"{doc.name}: {key}")
    assert not wrong, "no such config key: " + ", ".join(wrong)


@pytest.mark.parametrize("name", ["rfidd.example.toml", "hq.example.toml"])
def test_example_configs_pass_check_config(name: str) -> None:
    from click.testing import CliRunner

    from rfidd.cli import main

    args = ["check-config", "--syntax-only", str(ROOT / "config" / name)]
    if name.startswith("hq"):
        args = ["hq", *args]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
