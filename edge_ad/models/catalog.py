"""The model catalogue: every registered variant's card (family, paper, input size, description, encoder weights,
parameter counts), as plain data so `edge-ad models` and name checks answer without importing torch or timm.

The family modules attach builders to these cards (`edge_ad.models.registry.register_variants`); a variant without
a card, or a card without a builder, is an error, and tests pin the parameter counts to the built models.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelCard:
    """What is known about a variant without building it."""

    name: str
    family: str
    input_size: tuple[int, int]
    description: str
    weights_name: str  #: key of the encoder weights in the offline cache (`edge_ad.models.weights`)
    test_only: bool  #: tiny CPU variants that are not from any paper (no pretrained weights exist)
    params_total: int
    params_trainable: int

    @property
    def paper(self) -> str:
        return PAPERS[self.family]


PAPERS: dict[str, str] = {
    "dinomaly": (
        "Guo et al., Dinomaly: The Less Is More Philosophy in Multi-Class Unsupervised Anomaly Detection, CVPR"
        " 2025 (arXiv:2405.14325)"
    ),
    "dualad": (
        "He et al., DualAD: Exploring Coupled Dual-Branch Networks for Multi-Class Unsupervised Anomaly "
        "Detection, Electronics 14(3):594, 2025 (doi:10.3390/electronics14030594)"
    ),
    "mambaad": (
        "He et al., MambaAD: Exploring State Space Models for Multi-class Unsupervised Anomaly Detection, "
        "NeurIPS 2024 (arXiv:2404.06564)"
    ),
    "ulsad": (
        "Patra and Ben Taieb, Revisiting Deep Feature Reconstruction for Logical and Structural Industrial "
        "Anomaly Detection, TMLR 09/2024 (arXiv:2410.16255)"
    ),
}

CARDS: dict[str, ModelCard] = {c.name: c for c in (
    ModelCard("dinomaly-b", "dinomaly", (392, 392),
              "Dinomaly ViT-B/14 DINOv2-R encoder, 448->392 input (paper default)",
              weights_name="vit_base_patch14_reg4_dinov2.lvd142m", test_only=False, params_total=148_007_424,
              params_trainable=61_425_408),
    ModelCard("dinomaly-l", "dinomaly", (392, 392),
              "Dinomaly ViT-L/14 DINOv2-R encoder, taps 4..18 step 2, 448->392 input (paper Table 4)",
              weights_name="vit_large_patch14_reg4_dinov2.lvd142m", test_only=False, params_total=413_534_208,
              params_trainable=109_163_520),
    ModelCard("dinomaly-s", "dinomaly", (392, 392),
              "Dinomaly ViT-S/14 DINOv2-R encoder, 448->392 input (paper Table 4)",
              weights_name="vit_small_patch14_reg4_dinov2.lvd142m", test_only=False, params_total=37_434_624,
              params_trainable=15_377_280),
    ModelCard("dinomaly-tiny", "dinomaly", (224, 224),
              "NOT FROM THE PAPER: tiny random-init ViT/14 (128-d, 2 heads, 10 blocks), 256->224 input, for "
              "CPU tests and demos only",
              weights_name="edgead_vit_tiny_patch14_reg4", test_only=True, params_total=3_809_664,
              params_trainable=1_717_888),
    ModelCard("dualad-he", "dualad", (224, 224),
              "DualAD(He) WRN50-2 layers 1-3, MLP+memory wide branch, 224 input (released config, paper "
              "default)",
              weights_name="wide_resnet50_2.tv_in1k", test_only=False, params_total=55_519_296,
              params_trainable=30_656_768),
    ModelCard("dualad-he-tiny", "dualad", (224, 224),
              "NOT FROM THE PAPER: tiny random-init ResNet (16/32/64 channels) + 32-d He CDBN (2 chunks), 224 "
              "input, for CPU tests and demos only",
              weights_name="edgead_resnet_tiny", test_only=True, params_total=257_616,
              params_trainable=163_184),
    ModelCard("dualad-ho", "dualad", (224, 224),
              "DualAD(Ho) WRN50-2 layers 1-3, 1024-d transformer wide branch, 224 input (2+2 wide layers and "
              "no memory inferred from the paper's parameter table)",
              weights_name="wide_resnet50_2.tv_in1k", test_only=False, params_total=95_362_112,
              params_trainable=70_499_584),
    ModelCard("dualad-ho-tiny", "dualad", (224, 224),
              "NOT FROM THE PAPER: tiny random-init ResNet (16/32/64 channels) + 32-d Ho CDBN (2 chunks, 1+1 "
              "wide layers), 224 input, for CPU tests and demos only",
              weights_name="edgead_resnet_tiny", test_only=True, params_total=300_176,
              params_trainable=205_744),
    ModelCard("mambaad", "mambaad", (256, 256),
              "MambaAD, ResNet34 teacher (layers 1-3), decoder depths [3,4,6,3], Hilbert x8 scans, 256x256 "
              "input",
              weights_name="resnet34.bt_in1k", test_only=False, params_total=25_654_528,
              params_trainable=17_444_928),
    ModelCard("mambaad-tiny", "mambaad", (64, 64),
              "NOT FROM THE PAPER: tiny random-init 16-wide ResNet teacher, decoder depths [2,2,2,2], 64x64 "
              "input, for CPU tests and demos only",
              weights_name="edgead_resnet_tiny", test_only=True, params_total=1_147_648,
              params_trainable=1_051_856),
    ModelCard("ulsad", "ulsad", (256, 256),
              "ULSAD: frozen WideResNet50-2 layer2+3 -> 384 ch, feature reconstruction + global AE, 256x256 "
              "input",
              weights_name="wide_resnet50_2.racm_in1k", test_only=False, params_total=91_380_992,
              params_trainable=66_518_464),
    ModelCard("ulsad-tiny", "ulsad", (256, 256),
              "NOT FROM THE PAPER: random-init ResNet-10-T layer2+3 -> 48 ch, small FRN + global AE, 256x256 "
              "input, for CPU tests and demos only",
              weights_name="edgead_ulsad_tiny_resnet10t", test_only=True, params_total=3_111_384,
              params_trainable=1_861_984),
)}

def card(name: str) -> ModelCard:
    """The card of a registered variant; KeyError naming the known ones otherwise."""
    if name not in CARDS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(CARDS))}")
    return CARDS[name]
