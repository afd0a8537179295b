"""Training config resolution: precedence and clear errors."""

import pytest

from edge_ad.errors import ConfigError
from edge_ad.train.config import resolve_config


def test_precedence_recipe_yaml_cli(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("iters: 50\nbatch: 4\nlr: 0.01\n")
    cfg = resolve_config({"iters": 10000, "batch": 16, "eps": 1e-8}, y, {"model": "m", "data": "d", "out": "o", "batch": 2})
    assert (cfg["iters"], cfg["batch"], cfg["lr"], cfg["eps"]) == (50, 2, 0.01, 1e-8)


def test_unknown_yaml_key_named(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("iterz: 5\n")
    with pytest.raises(ConfigError, match="iterz"):
        resolve_config({}, y, {"model": "m", "data": "d", "out": "o"})


def test_wrong_type_named():
    with pytest.raises(ConfigError, match="iters.*expected int.*str"):
        resolve_config({}, None, {"model": "m", "data": "d", "out": "o", "iters": "many"})


def test_out_of_range_values():
    with pytest.raises(ConfigError, match="target_frr"):
        resolve_config({}, None, {"model": "m", "data": "d", "out": "o", "target_frr": 1.5})
    with pytest.raises(ConfigError, match="batch"):
        resolve_config({}, None, {"model": "m", "data": "d", "out": "o", "batch": 0})


def test_missing_required():
    with pytest.raises(ConfigError, match="data"):
        resolve_config({}, None, {"model": "m", "out": "o"})
