"""Official evaluation protocols: metric variants pinned to the official codes' figures, PIL-exact resizing shared by
training and the torch-free runtime, per-protocol ground-truth masks, and `--protocol official` train/eval runs.

The OFFICIAL figures were computed once by the official evaluation code of each repository on the fixtures of
tests/protocol_fixtures.py with benchmarks/sbs_eval_official.py (Dinomaly utils.py, ADer util/metric.py with
MambaAD's config, DualAD utils/eval_helper.py, ULSAD's anomalib + torchmetrics 0.10.3); they are not recomputed.
"""

import json
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from protocol_fixtures import FIXTURES, category

from edge_ad.cli.main import main
from edge_ad.data.synth import generate
from edge_ad.errors import ConfigError, DataError
from edge_ad.evaluate.metrics import CategoryPredictions, MetricVariants, evaluate_categories
from edge_ad.evaluate.protocols import EDGE_AD, family_of, get_protocol, protocol_mask
from edge_ad.runtime.preprocess import Preprocess
from edge_ad.runtime.resample import pil_bilinear

pytestmark = pytest.mark.slow  # trains/exports models or starts real peers: not in `make test-fast`

NAN = float("nan")
OFFICIAL = {  # computed by the official codes (benchmarks/sbs_eval_official.py), pinned here
    'dinomaly': {
        'a': {
            'aupro': 0.9800537163063754,
            'image_ap': 0.857142857142857,
            'image_auroc': 0.836734693877551,
            'image_f1max': 0.823529363321802,
            'pixel_ap': 0.821954841262699,
            'pixel_auroc': 0.9962813633081922,
            'pixel_f1max': 0.7653996878837621,
        },
        'b': {
            'aupro': 0.7633556060623673,
            'image_ap': 0.6372405372405372,
            'image_auroc': 0.6020408163265306,
            'image_f1max': 0.7058823044982732,
            'pixel_ap': 0.32773218002798504,
            'pixel_auroc': 0.9291337843343903,
            'pixel_f1max': 0.42943543387178656,
        },
        'over1': {
            'aupro': 0.7798923976351512,
            'image_ap': 0.8962585034013604,
            'image_auroc': 0.8571428571428571,
            'image_f1max': 0.85714280714286,
            'pixel_ap': 0.7218470684037384,
            'pixel_auroc': 0.9538960693032547,
            'pixel_f1max': 0.748403526008136,
        },
        'wide': {
            'aupro': 0.47747122041669915,
            'image_ap': 0.7309833024118737,
            'image_auroc': 0.5918367346938775,
            'image_f1max': 0.6666666222222252,
            'pixel_ap': 0.3137242167754593,
            'pixel_auroc': 0.8431546481086887,
            'pixel_f1max': 0.3883494681014289,
        },
    },
    'dualad': {
        'a': {
            'aupro': 0.9800537163063753,
            'image_ap': 0.857142857142857,
            'image_auroc': 0.836734693877551,
            'image_f1max': 0.8235294117647058,
            'pixel_ap': 0.821954841262699,
            'pixel_auroc': 0.9962813633081922,
            'pixel_f1max': 0.7653997378768022,
        },
        'b': {
            'aupro': 0.7634399454288531,
            'image_ap': 0.6372405372405372,
            'image_auroc': 0.6020408163265306,
            'image_f1max': 0.7058823529411764,
            'pixel_ap': 0.32773218002798504,
            'pixel_auroc': 0.9291337843343903,
            'pixel_f1max': 0.42943548387096775,
        },
        'over1': {
            'aupro': 0.7798923976351508,
            'image_ap': 0.8962585034013604,
            'image_auroc': 0.8571428571428571,
            'image_f1max': 0.8571428571428571,
            'pixel_ap': 0.7218470684037384,
            'pixel_auroc': 0.9538960693032547,
            'pixel_f1max': 0.7484035759897829,
        },
        'wide': {
            'aupro': 0.47747122041669915,
            'image_ap': 0.7309833024118737,
            'image_auroc': 0.5918367346938775,
            'image_f1max': 0.6666666666666666,
            'pixel_ap': 0.3137242167754593,
            'pixel_auroc': 0.8431546481086887,
            'pixel_f1max': 0.3883495145631068,
        },
    },
    'mambaad': {
        'a': {
            'aupro': 0.9790872778670335,
            'image_ap': 0.8722222222222222,
            'image_auroc': 0.875,
            'image_f1max': 0.8333333333333334,
            'pixel_ap': 0.821954841262699,
            'pixel_auroc': 0.9962813633081922,
            'pixel_f1max': 0.7391812816021887,
        },
        'b': {
            'aupro': 0.754496998077375,
            'image_ap': 0.6372405372405372,
            'image_auroc': 0.6020408163265306,
            'image_f1max': 0.7058823529411764,
            'pixel_ap': 0.32773218002798504,
            'pixel_auroc': 0.9291337843343903,
            'pixel_f1max': 0.42943547886239103,
        },
        'over1': {
            'aupro': 0.7720545038176986,
            'image_ap': 0.8690476190476191,
            'image_auroc': 0.8333333333333334,
            'image_f1max': 0.8,
            'pixel_ap': 0.7218470684037384,
            'pixel_auroc': 0.9538960693032547,
            'pixel_f1max': 0.7448453558060767,
        },
        'wide': {
            'aupro': 0.4659137999415777,
            'image_ap': 0.6186147186147186,
            'image_auroc': 0.5,
            'image_f1max': 0.6,
            'pixel_ap': 0.3137242167754593,
            'pixel_auroc': 0.8431546481086887,
            'pixel_f1max': 0.37088387722066873,
        },
    },
    'ulsad': {
        'a': {
            'aupro': 0.9835459589958191,
            'image_auroc': 0.8367347121238708,
            'pixel_auroc': 0.9962813854217529,
        },
        'b': {
            'aupro': 0.7737897038459778,
            'image_auroc': 0.6020408272743225,
            'pixel_auroc': 0.9291338324546814,
        },
        'over1': {
            'aupro': 0.7902052402496338,
            'image_auroc': 0.8571428656578064,
            'pixel_auroc': 0.953896164894104,
        },
        'wide': {
            'aupro': NAN,
            'image_auroc': 0.5918367505073547,
            'pixel_auroc': 0.8431546092033386,
        },
    },
}

MODEL_OF = {"dinomaly": "dinomaly-s", "mambaad": "mambaad", "dualad": "dualad-he", "ulsad": "ulsad"}


def _metrics(fixture: str, variants: MetricVariants) -> dict:
    seed, scale = FIXTURES[fixture]
    c = category(seed, scale=scale)
    types = ["good" if v == 0 else "d" for v in c["labels"]]
    p = CategoryPredictions(c["labels"], c["scores"], c["masks"], c["maps"], types)
    return evaluate_categories({"x": p}, variants)


@pytest.mark.parametrize("family", sorted(OFFICIAL))
@pytest.mark.parametrize("fixture", sorted(FIXTURES))
def test_official_metrics_equal_the_official_codes_figures(family, fixture):
    proto = get_protocol("official", MODEL_OF[family])
    got = _metrics(fixture, proto.variants)["categories"]["x"]
    for key, want in OFFICIAL[family][fixture].items():
        if math.isnan(want):
            assert math.isnan(got[key]), (family, fixture, key)
        else:
            assert got[key] == pytest.approx(want, abs=1e-12), (family, fixture, key)
    for key in set(got) - set(OFFICIAL[family][fixture]):
        assert math.isnan(got[key]), f"{family} reports {key}, which its official code does not compute"


def test_the_variants_are_different_numbers():
    """Each variant changes a figure on these fixtures (a pin could not hide a variant that did nothing)."""
    d, m, u = (OFFICIAL[f]["a"] for f in ("dinomaly", "mambaad", "ulsad"))
    assert d["pixel_f1max"] != m["pixel_f1max"]  # exact F1max vs ADer's 21 thresholds
    assert d["aupro"] != m["aupro"] != u["aupro"]  # max-200 vs minmax-100 vs anomalib
    assert d["image_auroc"] != m["image_auroc"]  # folder labels vs ADer's mask labels (image 1's empty mask)
    assert OFFICIAL["dinomaly"]["b"]["aupro"] != OFFICIAL["dualad"]["b"]["aupro"]  # FPR/max vs (FPR-min)/(max-min)


def test_reports_name_the_variants():
    report = _metrics("a", get_protocol("official", "mambaad").variants)
    assert report["metric_variants"]["pixel_f1"] == "ader-21"
    assert report["metric_variants"]["aupro"] == "minmax-100"
    ulsad = _metrics("a", get_protocol("official", "ulsad").variants)
    assert any("not reported by this protocol" in n for n in ulsad["notes"])
    assert math.isnan(ulsad["mean"]["image_ap"])


def test_protocol_lookup_errors():
    assert family_of("dinomaly-tiny") == "dinomaly" and family_of("ulsad-tiny") == "ulsad"
    assert get_protocol("edge-ad", "mambaad") is EDGE_AD
    with pytest.raises(ConfigError, match="no official protocol is known for model 'patchcore'"):
        get_protocol("official", "patchcore")
    with pytest.raises(ConfigError, match="expected one of"):
        get_protocol("paper", "mambaad")
    with pytest.raises(DataError, match="aupro must be one of"):
        MetricVariants(aupro="minmax-7")


def test_official_training_length():
    ulsad = get_protocol("official", "ulsad")
    assert ulsad.train_iters(242, 6000) == 200 * 31  # batch 8, no drop_last
    assert get_protocol("official", "mambaad").train_iters(3629, 1) == 1000 * 226  # batch 16, drop_last
    assert get_protocol("official", "dualad-he").train_iters(3629, 1) == 1200 * 227
    assert get_protocol("official", "dinomaly-s").train_iters(3629, 10000) == 10000  # fixed iterations
    assert not any(get_protocol("official", m).holdout for m in MODEL_OF.values())


# ---- resizing: Pillow-exact, shared by training and the runtime ------------------------------------------------
@pytest.mark.parametrize(
    "shape,size",
    [
        ((1024, 1024, 3), (448, 448)),
        ((700, 900, 3), (256, 256)),
        ((100, 130), (256, 224)),
        ((257, 255), (256, 256)),
        ((1000, 480, 3), (448, 448)),
        ((3, 5, 3), (7, 2)),
    ],
)
def test_pil_bilinear_is_bit_exact(shape, size, monkeypatch):
    """The numpy path (what runs without Pillow) equals Pillow, and so does the Pillow-accelerated path."""
    from edge_ad.runtime import resample

    img = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    want = np.asarray(Image.fromarray(img).resize(size[::-1], Image.BILINEAR))
    np.testing.assert_array_equal(pil_bilinear(img, size), want)
    monkeypatch.setattr(resample, "_PIL", False)  # as on a runtime without Pillow
    np.testing.assert_array_equal(pil_bilinear(img, size), want)


def test_old_pillow_is_not_used(monkeypatch):
    """Pillow <= 11.0 runs its passes in another order: the numpy path is used instead of it."""
    import PIL

    from edge_ad.runtime import resample

    monkeypatch.setattr(resample, "_PIL", None)
    monkeypatch.setattr(PIL, "__version__", "10.4.0")
    assert resample._pillow() is None
    monkeypatch.setattr(resample, "_PIL", None)
    monkeypatch.setattr(PIL, "__version__", "12.0.0")
    assert resample._pillow() is not None


def test_pil_bilinear_rejects_non_uint8():
    with pytest.raises(ValueError, match="expected a uint8"):
        pil_bilinear(np.zeros((4, 4), np.float32), (2, 2))


def test_official_preprocess_equals_torchvision_on_pil_and_the_runtime_reads_it():
    """Dinomaly's official transform (PIL Resize((448,448)) -> ToTensor -> CenterCrop(392)) = edge-ad's training
    input = what the torch-free runtime computes from the manifest's preprocess dict."""
    from torchvision import transforms

    from edge_ad.data.mvtec import Sample
    from edge_ad.data.torch_dataset import ImageDataset

    rgb = np.random.default_rng(0).integers(0, 256, (600, 520, 3), dtype=np.uint8)
    official = transforms.Compose([transforms.Resize((448, 448)), transforms.ToTensor(), transforms.CenterCrop(392)])
    want = official(Image.fromarray(rgb))
    pre = Preprocess(resize=(448, 448), crop=(392, 392), interpolation="pil-bilinear")
    runtime = Preprocess.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert runtime.interpolation == "pil-bilinear"
    got = runtime.apply(rgb[..., ::-1])
    np.testing.assert_array_equal(got, np.round(want.numpy().transpose(1, 2, 0) * 255).astype(np.uint8))
    assert torch.equal(torch.from_numpy(got).permute(2, 0, 1).float() / 255, want)
    # and training feeds the same pixels (ImageDataset -> Preprocess.apply -> normalize)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.png"
        cv2.imwrite(str(path), rgb[..., ::-1])
        item = ImageDataset([Sample(path, "c", "train", 0, "good")], pre)[0]
    np.testing.assert_array_equal(item["image"].numpy(), pre.normalize(got))


# ---- ground-truth masks as each official code builds them --------------------------------------------------
def _raw_mask():
    m = np.zeros((300, 340), np.uint8)
    cv2.circle(m, (100, 120), 30, 255, -1)
    cv2.rectangle(m, (200, 20), (203, 200), 255, -1)  # a thin line: the methods disagree on its width
    m[250:252, 10:300] = 128  # a non-binary stroke (anti-aliased mask edges)
    return m


def test_masks_follow_each_official_code():
    from torchvision import transforms

    raw = _raw_mask()
    pil = Image.fromarray(raw, mode="L")
    # Dinomaly: Resize(448) -> CenterCrop(392) -> ToTensor, then nearest to 256 and bool
    pre = Preprocess(resize=(448, 448), crop=(392, 392))
    t = transforms.Compose([transforms.Resize((448, 448)), transforms.CenterCrop(392), transforms.ToTensor()])(pil)
    want = torch.nn.functional.interpolate(t[None], size=256, mode="nearest")[0, 0].bool().numpy()
    got = protocol_mask(get_protocol("official", "dinomaly-s"), raw, pre, (256, 256))
    np.testing.assert_array_equal(got, want)
    # MambaAD (ADer): > 0 -> 255 -> Resize(256) -> ToTensor -> > 0.5
    pre = Preprocess(resize=(256, 256), crop=(256, 256))
    bin_pil = Image.fromarray((raw > 0).astype(np.uint8) * 255, mode="L")
    want = (transforms.ToTensor()(bin_pil.resize((256, 256), Image.BILINEAR))[0] > 0.5).numpy()
    np.testing.assert_array_equal(protocol_mask(get_protocol("official", "mambaad"), raw, pre, (256, 256)), want)
    # DualAD: cv2 INTER_NEAREST -> ToTensor -> astype(int)
    pre = Preprocess(resize=(224, 224), crop=(224, 224))
    near = cv2.resize(raw, (224, 224), interpolation=cv2.INTER_NEAREST)
    want = (transforms.ToTensor()(Image.fromarray(near, "L"))[0].numpy().astype(int)) == 1
    np.testing.assert_array_equal(protocol_mask(get_protocol("official", "dualad-he"), raw, pre, (224, 224)), want)
    # ULSAD (anomalib): / 255.0 -> nearest -> int()
    pre = Preprocess(resize=(256, 256), crop=(256, 256))
    want = cv2.resize(raw / 255.0, (256, 256), interpolation=cv2.INTER_NEAREST).astype(int) == 1
    np.testing.assert_array_equal(protocol_mask(get_protocol("official", "ulsad"), raw, pre, (256, 256)), want)
    # the four differ from each other and from edge-ad's on this mask
    edge = protocol_mask(EDGE_AD, raw, Preprocess(resize=(256, 256), crop=(256, 256)), (256, 256))
    assert edge.sum() != got.sum() and not np.array_equal(edge, want)


def test_a_mask_of_another_size_is_refused_by_name(tmp_path):
    from edge_ad.data.mvtec import Sample
    from edge_ad.evaluate.runner import raw_mask

    img, mask = tmp_path / "x.png", tmp_path / "x_mask.png"
    cv2.imwrite(str(img), np.zeros((40, 50, 3), np.uint8))
    cv2.imwrite(str(mask), np.zeros((40, 40), np.uint8))
    with pytest.raises(DataError, match=r"x_mask.png: size 40x40 differs from image .*x.png size 50x40"):
        raw_mask(Sample(img, "c", "test", 1, "crack", mask))


def test_good_images_have_empty_masks():
    pre = Preprocess(resize=(64, 64), crop=(64, 64))
    for fam in MODEL_OF.values():
        assert protocol_mask(get_protocol("official", fam), None, pre, (32, 32)).sum() == 0


# ---- train/eval --protocol official end to end ------------------------------------------------------------
@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol_data")
    generate(root, categories=["pcb", "fabric"], per_category=5, size=96, seed=9)
    return root


def _eval_official(run, out, capsys):
    """`edge-ad eval --protocol official --json -` of a run; the printed report."""
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--out", str(out), "--protocol", "official", "--overlays", "0",
                 "--no-progress", "--json", "-"]) == 0
    return json.loads(capsys.readouterr().out)


def _train(data, out, model, *extra):
    assert (
        main(
            [
                "train",
                "--model",
                model,
                "--data",
                str(data),
                "--out",
                str(out),
                "--iters",
                "2",
                "--batch",
                "2",
                "--no-pretrained",
                "--workers",
                "0",
                "--no-progress",
                "--protocol",
                "official",
                *extra,
            ]
        )
        == 0
    )


def test_official_protocol_run_trains_on_all_images_and_records_the_resize(synth_data, tmp_path, capsys):
    run = tmp_path / "run"
    _train(synth_data, run, "dinomaly-tiny")
    info = json.loads((run / "run.json").read_text())
    assert info["n_holdout"] == 0 and info["protocol"]["name"] == "official"
    assert info["protocol"]["image_resize"] == "pil-bilinear"
    thr = json.loads((run / "thresholds.json").read_text())
    assert "no hold-out" in thr["source"]["note"]
    out = tmp_path / "eval"
    report = _eval_official(run, out, capsys)
    assert report["protocol"]["family"] == "dinomaly"
    assert report["metric_variants"]["aupro"] == "max-200"
    assert json.loads((out / "metrics.json").read_text())["protocol"]["mask"] == "dinomaly"
    # the exported package names the resize, and the runtime reads it
    from edge_ad.export.exporter import export_package
    from edge_ad.runtime import Detector

    pkg, _ = export_package(run=str(run), out=tmp_path / "pkg")
    assert Detector.load(pkg, backend="onnxruntime").preprocess.interpolation == "pil-bilinear"


def test_edge_ad_run_evaluated_officially_says_the_resize_differs(tiny_fp32, tmp_path, capsys):
    _, run, _ = tiny_fp32
    report = _eval_official(run, tmp_path, capsys)
    assert any("trained with 'area-down/linear-up'" in n for n in report["notes"])


def test_ulsad_official_trains_one_model_per_category(synth_data, tmp_path, capsys):
    run = tmp_path / "ulsad"
    _train(synth_data, run, "ulsad-tiny")
    runs = json.loads((run / "per_category.json").read_text())["runs"]
    assert sorted(runs) == ["fabric", "pcb"]
    for cat in runs:
        assert json.loads((run / cat / "run.json").read_text())["categories"] == [cat]
    with pytest.raises(ConfigError, match="one run per category"):
        from edge_ad.evaluate.rundir import load_run

        load_run(run)
    report = _eval_official(run, tmp_path / "e", capsys)
    assert sorted(report["categories"]) == ["fabric", "pcb"]
    assert report["categories"]["pcb"]["image_ap"] is None  # not an official ULSAD metric
    assert report["protocol"]["calibrate_on_test_good"] is True
