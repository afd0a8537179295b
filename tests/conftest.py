"""Shared fixtures. `tiny_fp32` trains and exports one small dinomaly-tiny package per test session, reused by the
precision and gate tests (each writes its conversions into its own folder); `package` is the tiny runtime test
package; `build_tiny` builds a family's tiny variant. The lab side (torch) is imported only inside the fixtures
that need it, so the line-side tests run on a device install without it."""

import pytest


@pytest.fixture(scope="session")
def tiny_fp32(tmp_path_factory):
    """(data root, run dir, fp32 package) of a 2-iteration dinomaly-tiny on 2 synthetic categories."""
    from edge_ad.cli.main import main
    from edge_ad.data.synth import generate
    from edge_ad.export.exporter import export_package

    root = tmp_path_factory.mktemp("tiny_fp32")
    data = root / "data"
    generate(data, categories=["pcb", "fabric"], per_category=6, size=96, seed=5)
    run = root / "run"
    assert main(["train", "--model", "dinomaly-tiny", "--data", str(data), "--out", str(run), "--iters", "2",
                 "--batch", "4", "--no-pretrained", "--workers", "0", "--no-progress", "--val-fraction", "0.34"]) == 0
    pkg, _ = export_package(run=str(run), out=root / "fp32")
    return data, run, pkg


@pytest.fixture(scope="session")
def plc_packages(tmp_path_factory, package):
    """Two tiny packages: 'a' (= `package`: threshold 0.5, dark image OK) and 'b' threshold 0.05 (dark image NG)."""
    from runtime_fixtures import build_package

    return {"a": package, "b": build_package(tmp_path_factory.mktemp("plc_pkgs") / "b", image_threshold=0.05)}


@pytest.fixture(scope="session")
def detector(plc_packages):
    """The Detector of plc_packages['a'] on ONNX Runtime."""
    from edge_ad.runtime import Detector

    return Detector.load(plc_packages["a"], backend="onnxruntime")


@pytest.fixture(scope="session")
def package(tmp_path_factory):
    """The shared tiny test package (runtime_fixtures.build_package): image threshold 0.5, a dark image is OK and
    the bright blob is NG. Tests that change a package copy it first."""
    from runtime_fixtures import build_package

    return build_package(tmp_path_factory.mktemp("package") / "pkg")


@pytest.fixture(scope="session")
def build_tiny():
    """`build_tiny(name)`: the random-init tiny variant `name`, seeded (0), in eval mode (the family tests' model)."""

    def build(name):
        import torch

        from edge_ad.models import create_model

        torch.manual_seed(0)
        return create_model(name).eval()

    return build
