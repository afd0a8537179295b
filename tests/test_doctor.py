"""`edge-ad doctor`: Jetson/JetPack detection, missing components with install hints, never crashing, CLI output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edge_ad.runtime import doctor


def _by_name(report: doctor.Report) -> dict[str, doctor.Check]:
    return {c.name: c for c in report.checks}


@pytest.mark.parametrize(
    "text,l4t,jp",
    [
        (
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8",
            "36.4.3",
            "6.2",
        ),
        ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic", "36.4.0", "6.1"),
        ("# R36 (release), REVISION: 3.0, GCID: 36191598", "36.3.0", "6.0"),
        ("# R35 (release), REVISION: 4.1, GCID: 33958178", "35.4.1", "5.1.2"),
    ],
)
def test_l4t_parsing_and_jetpack_mapping(text: str, l4t: str, jp: str) -> None:
    assert doctor.parse_l4t(text) == l4t
    assert doctor.jetpack_for_l4t(l4t) == jp


def test_unknown_release_text() -> None:
    assert doctor.parse_l4t("garbage") is None
    assert doctor.jetpack_for_l4t("99.1.0") is None


def test_fake_jetson_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0")
    monkeypatch.setattr(doctor, "NV_TEGRA_RELEASE", release)
    monkeypatch.setattr(doctor, "DEVICE_TREE_MODEL", model)
    monkeypatch.setattr(doctor, "_run", lambda cmd, timeout=5.0: None)  # no dpkg, no nvidia-smi
    report = doctor.run_doctor()
    assert report.facts["jetson"] is True and report.facts["l4t"] == "36.4.3" and report.facts["jetpack"] == "6.2"
    checks = _by_name(report)
    assert checks["jetson"].detail.startswith("NVIDIA Jetson Orin Nano")
    assert "JetPack 6.2" in checks["L4T / JetPack"].detail
    assert checks["L4T / JetPack"].hint == doctor.HINTS["jetpack"]  # apt package absent -> how to add it


def test_not_a_jetson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "NV_TEGRA_RELEASE", tmp_path / "absent")
    monkeypatch.setattr(doctor, "DEVICE_TREE_MODEL", tmp_path / "absent2")
    report = doctor.run_doctor()
    assert report.facts["jetson"] is False
    assert _by_name(report)["jetson"].detail == "not a Jetson"


def test_missing_components_get_install_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in ("tensorrt", "asyncua", "snap7", "harvesters", "pycuda"):
        monkeypatch.setitem(sys.modules, mod, None)
    from edge_ad.runtime.trt import cuda_mem

    monkeypatch.setattr(cuda_mem, "_import_cudart", lambda: None)
    monkeypatch.setattr(cuda_mem, "_import_pycuda", lambda: None)
    checks = _by_name(doctor.run_doctor())
    assert checks["tensorrt"].status == "missing" and "python3-libnvinfer" in checks["tensorrt"].hint
    assert checks["asyncua (OPC UA)"].status == "missing" and "pip install asyncua" in checks["asyncua (OPC UA)"].hint
    assert checks["snap7 (Siemens S7)"].hint.startswith("pip install python-snap7")
    assert checks["harvesters"].status == "missing"
    assert checks["cuda-python"].status == "missing" and "cuda-python" in checks["cuda-python"].hint
    assert "CUDA runtime" in checks  # the libcudart fallback was probed


def test_a_probe_that_raises_becomes_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(report: doctor.Report) -> None:
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(doctor, "_check_onnxruntime", broken)
    report = doctor.run_doctor()
    check = _by_name(report)["onnxruntime"]
    assert check.status == "warn" and "driver exploded" in check.detail and check.group == "inference"
    assert "opencv" in _by_name(report)  # later probes still ran


def test_format_report_groups_and_hints() -> None:
    report = doctor.Report()
    report.add("inference", "tensorrt", "missing", "", "sudo apt install python3-libnvinfer")
    report.add("system", "python", "ok", "3.11")
    report.add("inference", "opencv", "ok", "4.10")
    text = doctor.format_report(report)
    lines = text.splitlines()
    assert lines[0] == "[inference]" and "[system]" in lines and lines.count("[inference]") == 1
    assert any("MISSING" in ln for ln in lines) and any("-> sudo apt install python3-libnvinfer" in ln for ln in lines)


def test_cli_doctor_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_ad.cli.main import main

    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {c["name"] for c in data["checks"]}
    assert {"python", "tensorrt", "onnxruntime", "opencv", "aravis (gi)", "pymodbus (Modbus)"} <= names
    assert "jetson" in data["facts"] and "tensorrt" in data["facts"]
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "[inference]" in out and "onnxruntime" in out


@pytest.mark.parametrize("jetson,jetpack,machine,gpu,extra", [
    (True, "6.2", "aarch64", True, "jetson"),
    (False, None, "x86_64", True, "cuda"),
    (False, None, "x86_64", False, "cpu"),
    (False, None, "aarch64", True, "cpu"),  # an ARM server GPU is not a target of the cuda extra (x86 wheels)
])
def test_doctor_recommends_the_extra_that_fits(jetson: bool, jetpack: str | None, machine: str, gpu: bool,
                                               extra: str) -> None:
    got, how = doctor.recommend_extra(jetson, jetpack, machine, gpu)
    assert got == extra and f"edge-ad[{extra}]" in how
    if extra == "jetson":
        assert "--system-site-packages" in how and "python3-libnvinfer" in how


def test_doctor_warns_about_two_onnxruntimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        doctor, "_version", lambda dist: "1.22.0" if dist in ("onnxruntime", "onnxruntime-gpu") else None
    )
    report = doctor.run_doctor()
    checks = _by_name(report)
    assert checks["onnxruntime install"].status == "warn" and "pip uninstall -y" in checks["onnxruntime install"].hint
    assert report.facts["recommended_extra"] in ("cpu", "cuda", "jetson")
    assert "fits this machine" in doctor.format_report(report)


def _fake_jetson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, board: bytes, release: str) -> None:
    (tmp_path / "nv_tegra_release").write_text(release)
    (tmp_path / "model").write_bytes(board + b"\0")
    monkeypatch.setattr(doctor, "NV_TEGRA_RELEASE", tmp_path / "nv_tegra_release")
    monkeypatch.setattr(doctor, "DEVICE_TREE_MODEL", tmp_path / "model")
    monkeypatch.setattr(doctor, "_run", lambda cmd, timeout=5.0: None)


def _fake_tensorrt(monkeypatch: pytest.MonkeyPatch, version: str, dla_cores: int) -> None:
    from fake_trt import FakeCuda, add_builder, make_tensorrt

    mod = make_tensorrt(FakeCuda(), version)
    add_builder(mod, dla_cores=dla_cores)
    monkeypatch.setitem(sys.modules, "tensorrt", mod)


JP62 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"


def test_doctor_says_which_tensorrt_and_whether_dla(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_jetson(tmp_path, monkeypatch, b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit", JP62)
    _fake_tensorrt(monkeypatch, "10.3.0.30", dla_cores=2)
    checks = _by_name(doctor.run_doctor())
    assert "TensorRT 10.3 from JetPack 6" in checks["tensorrt for this device"].detail
    assert checks["tensorrt"].status == "ok"
    assert checks["DLA"].status == "ok" and "2 DLA core(s): fp16 engines only" in checks["DLA"].detail

    _fake_tensorrt(monkeypatch, "10.3.0.30", dla_cores=0)  # Orin Nano: no DLA
    assert "no DLA core" in _by_name(doctor.run_doctor())["DLA"].detail

    _fake_tensorrt(monkeypatch, "11.4.0.5", dla_cores=2)  # a pip TensorRT 11 over JetPack 6's
    checks = _by_name(doctor.run_doctor())
    assert checks["tensorrt"].status == "warn" and "shadowing" in checks["tensorrt"].detail
    assert checks["DLA"].status == "info" and "has no DLA" in checks["DLA"].detail


def test_tensorrt_matrix_in_words() -> None:
    assert "11.4.1" in doctor.tensorrt_for_device(True, "NVIDIA Jetson AGX Orin Developer Kit", "7.2.2")
    nano = doctor.tensorrt_for_device(True, "NVIDIA Jetson Orin Nano Developer Kit", "7.0")
    assert "Orin Nano/NX stay on JetPack 6 with TensorRT 10.3" in nano
    assert "tensorrt-cu12 < 11" in doctor.tensorrt_for_device(False, None, None)


def test_readme_carries_the_tensorrt_matrix() -> None:
    from edge_ad.runtime.trt.support import TENSORRT_MATRIX

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for row in TENSORRT_MATRIX:
        assert "| " + " | ".join(row) + " |" in readme, row
    assert "JetPack 7\"" not in readme and "TensorRT 11 (JetPack 7)" not in readme
