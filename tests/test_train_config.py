"""Training config resolution: precedence and clear errors."""

import pytest

from edge_ad.errors import ConfigError
from edge_ad.train.options import resolve_config


def test_precedence_recipe_yaml_cli(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("iters: 50\nbatch: 4\nlr: 0.01\n")
    cfg = resolve_config(
        {"iters": 10000, "batch": 16, "eps": 1e-8}, y, {"model": "m", "data": "d", "out": "o", "batch": 2}
    )
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


def test_cli_flags_yaml_and_print_config_come_from_one_dataclass(tmp_path, capsys):
    import dataclasses

    import yaml

    from edge_ad.cli.main import build_parser, main
    from edge_ad.train.options import TrainOptions

    parser = build_parser()
    train = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices["train"]
    flags = {o for a in train._actions for o in a.option_strings}
    for f in dataclasses.fields(TrainOptions):
        assert ("--model-kwarg" if f.name == "model_kwargs" else "--" + f.name.replace("_", "-")) in flags, f.name
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.01\nbatch: 3\n")
    assert main(["train", "--model", "dinomaly-tiny", "--data", "d", "--config", str(y), "--batch", "5",
                 "--no-pretrained", "--model-kwarg", "dropout=0", "--categories", "pcb,wood", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lr"] == 0.01 and printed["batch"] == 5 and printed["pretrained"] is False
    assert printed["model_kwargs"] == {"dropout": 0} and printed["categories"] == ["pcb", "wood"]
    assert printed["out"] == "runs/dinomaly-tiny" and set(printed) == {f.name for f in dataclasses.fields(TrainOptions)}
    y.write_text(yaml.safe_dump(printed))  # what --print-config prints is a valid --config
    assert resolve_config({}, y, {})["batch"] == 5
