"""The package structure (docs/design.md, "Packages"): ``src/`` is the library and never imports its clients
``data_prep/`` and ``eval/``; no module imports itself back through others (import cycles); the renderer's Table 4
ablations differ from ``render_dual_attn`` only in the modules they build."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("src", "data_prep", "eval")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module ``path`` imports (at the top or inside functions), as the most specific module of ours that
    the statement names: ``from a.b import c`` is ``a.b.c`` when that is a module, else ``a.b``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {m for m in imported(path, name, known) if m in known and m != name} for name, path in mods.items()}


def test_src_imports_neither_data_prep_nor_eval():
    offenders = []
    for name, path in modules().items():
        if not name.startswith("src"):
            continue
        for target in imported(path, name, set()):
            if target.split(".")[0] in ("data_prep", "eval"):
                offenders.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not offenders, "src/ is the library; its clients data_prep/ and eval/ import it, never the reverse:\n" + \
        "\n".join(offenders)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    cycles = strongly_connected(import_graph())
    assert not cycles, "modules that import each other (directly or through others):\n" + \
        "\n".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_between_the_parts_of_src():
    """At the level of src's parts (src.media, src.tracking, src.geometry, src.models, ...): importing a module runs
    its package's __init__, so a part that imports another which imports it back is a cycle even when the modules
    themselves are not (src.geometry.face_models once built src.models.face_model, which reads the schema)."""
    part = {m: ".".join(m.split(".")[:2]) for m in import_graph() if m.startswith("src.")}
    graph = {p: set() for p in part.values()}
    for module, targets in import_graph().items():
        if module in part:
            graph[part[module]].update(part[t] for t in targets if t in part and part[t] != part[module])
    cycles = strongly_connected(graph)
    assert not cycles, "parts of src/ that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# ----- the renderer ablations: one module swap each -----

ABLATIONS = {"render_single_attn": "SingleAttention", "render_no_lip_attn": "FaceAttentionOnly",
             "render_no_face_attn": "LipAttentionOnly"}


def composed(experiment: str) -> dict:
    with initialize_config_dir(str(ROOT / "experiments"), version_base="1.3"):
        cfg = compose("train.yaml", overrides=[f"experiment={experiment}", f"paths.root_dir={ROOT}"])
    return OmegaConf.to_container(cfg.model, resolve=False)


def differences(a, b, where: str = "model") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{where}.{k}")]
    return [] if a == b else [where]


@pytest.mark.parametrize("experiment", ABLATIONS)
def test_each_renderer_ablation_swaps_only_the_attention_module(experiment):
    paper, ablation = composed("render_dual_attn"), composed(experiment)
    changed = differences(paper, ablation)
    assert changed and all(path.startswith("model.net.attention") for path in changed), changed
    assert ablation["net"]["attention"]["_target_"].endswith(ABLATIONS[experiment])
