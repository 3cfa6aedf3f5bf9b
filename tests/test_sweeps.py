"""Every W&B sweep file launches valid runs: its command is `python -m src.train experiment=...
${args_no_hyphens}`, and the experiment composes, resolves and builds its network with values from each
parameter's range (every listed value; both bounds of a distribution)."""
from pathlib import Path

import hydra
import pytest
import yaml
from omegaconf import OmegaConf

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "sweeps").glob("*.yaml"))


def _samples(spec: dict) -> list:
    if "values" in spec:
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    if "min" in spec and "max" in spec:
        return [spec["min"], spec["max"]]
    raise ValueError(f"sweep parameter spec not understood: {spec}")


def _overrides(parameters: dict) -> list[list[str]]:
    """One override list per sample index: parameter k takes its sample i (mod its count), so every value of
    every parameter appears in some run and the runs mix them."""
    values = {name: _samples(spec) for name, spec in parameters.items()}
    n = max(len(v) for v in values.values())
    return [[f"{name}={v[i % len(v)]}" for name, v in values.items()] for i in range(n)]


def test_sweeps_exist():
    assert {p.stem for p in SWEEPS} >= {"render_dual_attn", "geometry_style"}


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_launches_valid_runs(path, make_config):
    sweep = yaml.safe_load(path.read_text())
    command = sweep["command"]
    assert command[1:4] == ["python", "-m", "src.train"] and command[-1] == "${args_no_hyphens}", command
    experiment = next(arg for arg in command if arg.startswith("experiment="))
    fixed = [arg for arg in command[4:-1] if "=" in arg]
    assert sweep["metric"]["name"] == make_config(experiment).optimized_metric
    for overrides in _overrides(sweep["parameters"]):
        cfg = make_config(*fixed, *overrides)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        hydra.utils.instantiate(cfg.model.net, _recursive_=True) if "e_aud" not in cfg.model.net else \
            hydra.utils.instantiate(cfg.model.net, e_aud=_stub_audio(cfg))
        hydra.utils.instantiate(cfg.data)


def _stub_audio(cfg):
    """Stage 1's paper recipe loads HuBERT from a local folder; the sweep check builds a tiny one instead."""
    from src.models.geometry.e_aud import AudioEncoder

    return AudioEncoder(dim=cfg.model.net.temporal.dim, config={"hidden_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "intermediate_size": 64, "conv_dim": [16] * 7,
                        "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 2})
