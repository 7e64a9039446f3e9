"""The one configuration schema: `params.yaml` validated by pydantic.

Every entry point (the `python -m gan` stage commands run by DVC, and the
Prefect flow) goes through :func:`load_params`, so a typo stops the run before
any stage does work, with a message naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.functional_validators import PlainValidator

from gan.core import atomic
from gan.core import metric_keys as keys
from gan.core.architectures import ARCH_NAMES, ARCHITECTURES, LOSS_NAMES, LOSS_SPECS
from gan.core.datasets import DATASETS


class _Section(BaseModel):
    # strict: YAML already gives typed values, so "5" for an int or `yes` for a
    # number is a mistake to report, not to coerce. Ints are accepted as floats.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


AUGMENTS = ("color", "translation", "cutout")  # the DiffAugment policies gan.training.augment implements (tested)
FOLDER_RESOLUTION = 64  # data.resolution = 0 with data.dataset = folder


class DataConfig(_Section):
    dataset: Literal["fashion-mnist", "mnist", "kmnist", "cifar10", "folder"] = Field(
        "fashion-mnist",
        description="The images: a built-in dataset (from its mirrors, each file checked against its published "
        "checksum) or folder (your own images, from data.source).",
    )
    source: str = Field(
        "",
        description="folder only: a local folder, a .zip/.tar/.tar.gz/.tgz archive, or an http(s):// or file:// URL "
        "of such an archive.",
    )
    source_sha256: str = Field(
        "", pattern=r"^([0-9a-f]{64})?$", description="folder only: SHA-256 the source archive must have ('' = any)."
    )
    mirrors: list[str] = Field(
        default_factory=list,
        description="Extra mirror base URLs (https://, http://, file://) tried before the built-in ones.",
    )
    resolution: int = Field(
        0, ge=0, le=1024, description="Square side of every prepared image (0 = native for built-ins, 64 for folder)."
    )
    channels: Literal[0, 1, 3] = Field(
        0, description="1 (grey) or 3 (RGB); 0 = native for built-ins, for folder 3 if any image has colour."
    )
    crop: Literal["center", "pad"] = Field("center", description="Make images square: center-crop or letterbox.")
    resize_filter: Literal["lanczos", "bicubic", "bilinear", "hamming", "box", "nearest"] = Field(
        "lanczos", description="The Pillow filter that resizes images to data.resolution (antialiased when shrinking)."
    )
    background: list[int] = Field(
        default_factory=lambda: [255, 255, 255],
        min_length=3,
        max_length=3,
        description="RGB that transparency and letterbox bars are filled with (0..255 each).",
    )
    max_bad_fraction: float = Field(
        0.01, ge=0, le=1, description="folder: fail if more than this fraction of the files cannot be used."
    )
    test_fraction: float = Field(
        0.1, gt=0, lt=1, description="folder: share of images held out for evaluation (by content hash)."
    )
    limit_train: int = Field(0, ge=0, description="Keep only the first N training images (0 = all).")
    limit_test: int = Field(0, ge=0, description="Keep only the first N test images (0 = all).")
    connect_timeout: float = Field(
        3.0,
        gt=0,
        le=300,
        description="Seconds to wait for a mirror to connect (short: an offline machine then falls "
        "through to the file:// mirrors quickly).",
    )
    read_timeout: float = Field(30.0, gt=0, le=3600, description="Seconds to wait for each read from a mirror.")
    retries: int = Field(3, ge=1, le=20, description="Attempts per mirror for transient errors.")


class ModelConfig(_Section):
    arch: Literal[ARCH_NAMES] = Field(  # the names of gan.core.architectures
        "dcgan", description=", ".join(a.description for a in ARCHITECTURES.values()) + "."
    )
    z_dim: int = Field(100, ge=1, le=4096, description="Length of the noise vector z that G turns into an image.")
    hidden: int = Field(128, ge=1, le=65536, description="mlp: hidden units (the textbook uses 128).")
    channels: int = Field(64, ge=4, le=1024, description="dcgan/resnet/fastgan: base channel count of G and D.")
    spectral_norm: bool = Field(
        False, description="Spectral normalisation on every weight layer of D, whose BatchNorm is then dropped (SNGAN)."
    )
    conditional: bool = Field(
        False,
        description="Class-conditional G(z, y) and D(x, y) (conditional BatchNorm in G, projection D); needs labels.",
    )


AUTO = "auto"


def _auto_or(what: str, minimum: float, integer: bool):
    """A validator for settings that are 'auto' or a number >= `minimum` (an int where `integer`): one clear error."""

    def check(value: Any) -> Any:
        ok = value == AUTO or (
            not isinstance(value, bool) and isinstance(value, int if integer else int | float) and value >= minimum
        )
        if not ok:
            raise ValueError(f"expected 'auto' or {what}")
        return value

    return PlainValidator(check)


Steps = Annotated[int | str, _auto_or("a number of steps >= 1", 1, integer=True)]
Kimg = Annotated[float | str, _auto_or("a number of thousands of images > 0 (e.g. 300)", 1e-3, integer=False)]
EvalEvery = Annotated[int | str, _auto_or("0 (never) or a number of steps", 0, integer=True)]


class TrainConfig(_Section):
    seed: int = Field(
        0,
        ge=0,
        description="Seed of G's and D's initial weights, the noise and the batch order (same seed, settings "
        "and CPU type: bit-identical weights).",
    )
    kimg: Kimg = Field(
        AUTO,
        description="Training length in thousands of real images shown to D (as StyleGAN counts). auto: sized to "
        "the data (gan.core.length); train.epochs is the alternative.",
    )
    epochs: int = Field(0, ge=0, le=100_000, description="Training length in passes over the data (0 = use kimg).")
    batch_size: int = Field(
        128, ge=1, le=65536, description="Real images per step (the global batch, split among torchrun's processes)."
    )
    lr_g: float = Field(1e-3, gt=0, le=1, description="Adam learning rate of G.")
    lr_d: float = Field(5e-4, gt=0, le=1, description="Adam learning rate of D.")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 of G and D.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2 of G and D.")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description="Where training, the classifier, the judge, the reference features and the evaluation run: "
        "auto (CUDA if present, else the CPU), cpu, cuda, cuda:N (the GPU numbered N) or mps (Apple's GPU).",
    )
    checkpoint_every: int = Field(
        0, ge=0, description="Also checkpoint every N steps (0 = only at the end of each epoch)."
    )
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU, where bf16 is slower).")
    compile: bool = Field(
        False, description="torch.compile G and D: worth its compile time on a GPU; no gain measured on the CPU."
    )
    cuda_graph: bool = Field(
        False,
        description="Replay each training step as one CUDA graph (single-process CUDA; ~4x faster at small batches).",
    )
    max_seconds: float = Field(
        0, ge=0, description="Stop after this much training time (0 = no limit); the result then depends on speed."
    )
    log_flush_every: int = Field(
        50, ge=1, description="Steps between host syncs that write the per-step log (every step is logged)."
    )
    loss: Literal[LOSS_NAMES] = Field(  # the names of gan.core.architectures
        "ns", description="; ".join(spec.description for spec in LOSS_SPECS.values()) + "."
    )
    gp_weight: float = Field(
        10.0, ge=0, le=1e6, description="Losses with a gradient penalty (wgan-gp): its weight (paper: 10)."
    )
    r1_gamma: float = Field(
        0.0, ge=0, le=1e6, description="R1 penalty gamma/2·E||grad D(x)||^2 on real images (Mescheder et al.; 0 = off)."
    )
    r1_every: int = Field(16, ge=1, le=1000, description="Lazy R1: apply it every N steps, scaled by N (StyleGAN2).")
    augment: str = Field(
        "",
        description="DiffAugment policies applied to every image D sees, real and fake: a comma list of "
        f"{', '.join(AUGMENTS)} ('' = none).",
    )
    d_steps: int = Field(1, ge=1, le=100, description="D updates (each on its own batch) per G update.")
    ada_target: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Adaptive augmentation (StyleGAN2-ADA): each image D sees is augmented (train.augment) with a "
        "probability p moved toward keeping E[sign(D(real))] at this target (paper: 0.6; 0 = off, every image).",
    )
    ada_kimg: float = Field(
        100.0, gt=0, le=1e6, description="ADA: thousands of images over which p can move from 0 to 1 (paper: 500)."
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Exponential moving average of G's weights (0 = off): the EMA G is evaluated, exported and "
        "promoted; warm-up min(decay, (1+t)/(10+t)).",
    )

    eval_every: EvalEvery = Field(
        AUTO,
        description="Score G every N steps during training (0 = never; auto: 20 times over the planned length): "
        "Fréchet distance in the features of an extractor that passed its soundness test (classifier, else judge) "
        "between train.eval_samples generated images and as many real training images, logged to "
        "data/train/quality.tsv.",
    )
    eval_samples: int = Field(2000, ge=10, le=100_000, description="Images per side for train.eval_every's score.")
    keep: Literal["last", "best"] = Field(
        "best", description="The generator the stage keeps: the last one, or the best-scoring snapshot (eval_every)."
    )
    patience: int = Field(
        5,
        ge=0,
        le=100_000,
        description="Stop after this many scores in a row without a relative improvement of train.min_delta over "
        "the best (0 = never stop early).",
    )
    min_delta: float = Field(0.02, ge=0, lt=1, description="Relative improvement that resets train.patience.")

    @field_validator("augment")
    @classmethod
    def _known_augments(cls, value: str) -> str:
        policies = [p.strip() for p in value.split(",") if p.strip()]
        unknown = [p for p in policies if p not in AUGMENTS]
        if unknown:
            raise ValueError(f"unknown DiffAugment policy {unknown}: allowed {', '.join(AUGMENTS)} (comma-separated)")
        if len(set(policies)) != len(policies):
            raise ValueError(f"a DiffAugment policy is named twice in {value!r}")
        return ",".join(policies)

    @property
    def augment_policies(self) -> tuple[str, ...]:
        return tuple(p for p in self.augment.split(",") if p)


class ClassifierConfig(_Section):
    seed: int = Field(0, ge=0, description="Seed of the classifier's initial weights and batch order.")
    steps: Steps = Field(
        AUTO,
        description="Training steps (auto: 2 epochs, at least gan.core.length.CLASSIFIER_MIN_STEPS, so a small folder "
        "gets a classifier good enough to judge with).",
    )
    batch_size: int = Field(128, ge=1, le=65536, description="Images per step.")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")


class JudgeConfig(_Section):
    seed: int = Field(0, ge=0, description="Seed of the judge's initial weights, batch order and views.")
    steps: Steps = Field(
        AUTO,
        description="Training steps (auto: 1 epoch, at least gan.core.length.JUDGE_MIN_STEPS, so a small folder gets a "
        "judge that can tell blurred images from real ones).",
    )
    batch_size: int = Field(256, ge=2, le=65536, description="Images per step; the other 2N-2 views are the negatives.")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate.")
    temperature: float = Field(0.5, gt=0, le=10, description="NT-Xent temperature (SimCLR: 0.5 for small batches).")


class EvaluateConfig(_Section):
    seed: int = Field(
        1234,
        ge=0,
        description="Seed of the generated images scored, the real train images of the floors, the "
        "bootstrap and the KID subsets.",
    )
    n_samples: int = Field(
        10000,
        ge=2,
        le=1_000_000,
        description="Images per side: n generated images against n real test images (n is at most the size of "
        "the test and train splits).",
    )
    batch_size: int = Field(500, ge=1, le=65536, description="Images per batch when generating and extracting.")
    extractors: list[Literal[keys.EXTRACTORS]] = Field(
        default_factory=lambda: ["classifier", "judge"],
        min_length=1,
        description="Feature extractors: 'classifier' (labelled data), 'judge' (self-supervised on your images, no "
        "labels needed; also runs the memorisation check), 'inception' (standard FID: slow on CPU, needs weights).",
    )
    inception_weights: str = Field("", description="Path of the FID Inception weights ('' = torch hub cache).")
    bootstrap: int = Field(50, ge=0, le=10000, description="Bootstrap rounds for the FID interval (0 = none).")
    kid_subsets: int = Field(100, ge=1, le=10000, description="KID: random subsets averaged (mean and std).")
    kid_subset_size: int = Field(1000, ge=2, description="KID: images per side in each subset.")
    prdc_samples: int = Field(5000, ge=10, description="Samples per side for precision/recall/density/coverage.")
    prdc_k: int = Field(5, ge=1, le=100, description="Nearest neighbours k of precision/recall/density/coverage.")
    copy_cells: int = Field(
        50, ge=1, le=10000, description="Memorisation test: k-means cells of the training features (Meehan et al.)."
    )
    copy_quantile: float = Field(
        0.01,
        gt=0,
        lt=0.5,
        description="A generated image is a likely copy when it is closer to a training image than this share of "
        "unseen real images are.",
    )
    copy_pairs: int = Field(8, ge=1, le=256, description="Closest generated/training pairs shown in the picture.")


class ExportConfig(_Section):
    seed: int = Field(4321, ge=0, description="Seed of the exported samples (grid, PNGs, NPZ).")
    n_png: int = Field(64, ge=0, le=100_000, description="Samples written as PNG files to data/samples/png/.")
    n_npz: int = Field(
        10000, ge=1, le=1_000_000, description="Samples in data/samples/samples.npz (key images, N×H×W×C uint8)."
    )


AUTO_METRIC = "auto"


def auto_metric(metrics: dict) -> str:
    """What promote.metric = auto compares: the classifier's FID where metrics.json has it (labelled data) and the
    classifier passed its soundness test on this data (`separates_classifier`), else the judge's. Where neither
    separates, the one present (the gate then refuses, saying why)."""
    present = [m for m in map(keys.fid, keys.DOMAIN_EXTRACTORS) if m in metrics]
    sound = [m for m in present if metrics.get(keys.separates(keys.extractor_of(m)), True)]
    return (sound or present or [keys.fid(keys.DOMAIN_EXTRACTORS[-1])])[0]


class PromoteConfig(_Section):
    metric: Literal[(AUTO_METRIC, *(keys.metric(k, e) for k in (keys.FID, keys.KID) for e in keys.EXTRACTORS))] = Field(
        "auto",
        description="The metrics.json distance the gate compares (lower is better); its extractor must be in "
        "evaluate.extractors. auto: fid_classifier where the data has labels, else fid_judge.",
    )
    margin: float = Field(
        0.02, ge=0, lt=1, description="Relative distance improvement a challenger needs, on top of being better "
        "beyond the noise (promote.confidence)."
    )  # fmt: skip
    confidence: float = Field(
        0.95, gt=0, lt=1, description="The challenger must be better than the re-scored champion beyond the noise: "
        "the paired bootstrap interval (this confidence) of their difference on the same real images lies below 0. "
        "Otherwise: no significant difference, the champion is kept."
    )  # fmt: skip
    bootstrap: int = Field(
        200, ge=20, le=10_000, description="Bootstrap rounds of that paired comparison (each scores both generators)."
    )  # fmt: skip
    require_all_classes: bool = Field(
        True, description="Refuse a challenger that drops any class (needs the classifier's class metrics)."
    )
    require_sound: bool = Field(
        True,
        description="Refuse to promote on a metric whose extractor failed its soundness test on this data (it cannot "
        "tell degraded images from real ones: too few images, or too short a training). Off: promote anyway, saying so",
    )
    commit: bool = Field(
        True,
        description="After a run, commit the pipeline's own files (params.yaml, dvc.lock, the .dvc files and "
        "git-tracked metrics it maintains) to git, and tag a promoted champion; nothing else is ever committed.",
    )
    push: bool = Field(True, description="After a run, `dvc push` every output to the default DVC remote.")


class Params(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)


class ConfigError(ValueError):
    """params.yaml (or an override) is invalid; the message says where and why."""


def _describe_allowed(model: type[BaseModel], loc: tuple) -> str:
    """List the keys allowed at `loc` (for unknown-key errors)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return ""
        model = field.annotation
    return ", ".join(model.model_fields)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: {err.error_count()} invalid setting(s); no stage was run."]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            allowed = _describe_allowed(Params, e["loc"])
            lines.append(f"  - {key} = {value!r}: unknown key (allowed here: {allowed})")
        else:
            lines.append(f"  - {key} = {value!r}: {e['msg']}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=5` -> (["train", "epochs"], 5); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r}: empty key")
    return parts, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(raw: dict, overrides: list[str] | dict[str, Any] | None) -> dict:
    raw = json.loads(json.dumps(raw))  # deep copy of plain YAML data
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else key
        node = raw
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {'.'.join(parts)}: {p!r} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def image_resolution(data: DataConfig) -> int:
    """The side of every prepared image: data.resolution, or the dataset's native size (64 for folder)."""
    if data.resolution:
        return data.resolution
    return DATASETS[data.dataset].shape[1] if data.dataset in DATASETS else FOLDER_RESOLUTION


def _data_problems(p: Params) -> list[str]:
    d = p.data
    problems = []
    if d.dataset == "folder" and not d.source:
        problems.append(
            "data.source = '': data.dataset = 'folder' needs a source: a local folder, a .zip/.tar/.tar.gz "
            "archive, or an http(s):// or file:// URL of one"
        )
    if d.dataset != "folder" and d.source:
        problems.append(
            f"data.source = {d.source!r}: only used with data.dataset = 'folder' (the built-in {d.dataset!r} comes "
            "from its mirrors); remove it, or set data.dataset = 'folder'"
        )
    if d.source_sha256 and d.dataset != "folder":
        problems.append(f"data.source_sha256 = {d.source_sha256!r}: only used with data.dataset = 'folder'")
    bad = [v for v in d.background if not 0 <= v <= 255]
    if bad:
        problems.append(f"data.background = {d.background}: each of R, G, B must be 0..255 (got {bad})")
    res = image_resolution(d)
    sizes = ARCHITECTURES[p.model.arch].resolutions
    if sizes is not None and res not in sizes:
        what = f"data.resolution = {d.resolution}" if d.resolution else f"data.resolution = 0 (native {res})"
        problems.append(
            f"{what}: model.arch = {p.model.arch!r} is built for {', '.join(map(str, sizes))} px; "
            "choose one of those, or model.arch = 'mlp' (any size)"
        )
    return problems


def _train_problems(p: Params) -> list[str]:
    """Combinations of training parts that cannot run together."""
    t, problems = p.train, []
    arch, loss = p.model.arch, LOSS_SPECS[t.loss]
    if p.model.conditional and not ARCHITECTURES[arch].conditional:
        conditional = " or ".join(repr(a.name) for a in ARCHITECTURES.values() if a.conditional)
        problems.append(
            f"model.arch = {arch!r} with model.conditional = true: {arch} is unconditional; set model.conditional "
            f"= false, or model.arch = {conditional} for a class-conditional model"
        )
    if t.cuda_graph and t.augment:
        problems.append(
            f"train.cuda_graph with train.augment = {t.augment!r}: a captured graph would replay the same random "
            "augmentation every step; turn one of them off"
        )
    if t.cuda_graph and t.r1_gamma:
        problems.append(
            "train.cuda_graph with train.r1_gamma > 0: lazy R1 changes the step every train.r1_every steps, which one "
            "captured graph cannot replay; turn one of them off"
        )
    if t.compile and (t.r1_gamma or loss.double_backward):
        parts = ["R1 (train.r1_gamma > 0)"] if t.r1_gamma else []
        what = " and ".join(parts + ([f"train.loss = {t.loss!r} (a gradient penalty)"] if loss.double_backward else []))
        problems.append(
            f"train.compile with {what}: each differentiates D's gradient (a double backward), which torch.compile "
            "does not support; turn train.compile off"
        )
    if t.ada_target and not t.augment:
        problems.append(
            f"train.ada_target = {t.ada_target} with train.augment = '': adaptive augmentation needs policies to "
            "apply; set train.augment (e.g. color,translation,cutout), or train.ada_target = 0"
        )
    if t.keep == "best" and t.eval_every == 0:
        problems.append(
            "train.keep = 'best' with train.eval_every = 0: the best snapshot needs scores during training; set "
            "train.eval_every (e.g. auto or 500), or train.keep = 'last'"
        )
    if t.epochs and t.kimg != AUTO:
        problems.append(
            f"train.epochs = {t.epochs} and train.kimg = {t.kimg}: both set the length of training; keep one (set "
            "train.epochs = 0 to use kimg, or train.kimg = auto to use epochs)"
        )
    if t.cuda_graph and loss.draws_random:
        others = " or ".join(repr(spec.name) for spec in LOSS_SPECS.values() if not spec.draws_random)
        problems.append(
            f"train.cuda_graph with train.loss = {t.loss!r}: the penalty's random interpolation would be replayed "
            f"unchanged; use train.loss = {others} with the graph, or turn train.cuda_graph off"
        )
    return problems


def check_processes(t: TrainConfig, processes: int) -> None:
    """Settings that cannot run on `processes` processes: known only at train time (torchrun's WORLD_SIZE)."""
    if t.compile and processes > 1:
        raise ConfigError(
            f"train.compile with {processes} processes (torchrun --nproc_per_node = WORLD_SIZE = {processes}): G's "
            "update scores the fakes with D's own module, outside DistributedDataParallel, which the compiled "
            "wrapper would leave uncompiled; turn train.compile off, or train on one process"
        )


def _check_across_sections(p: Params, source: str) -> None:
    """Rules that tie settings together (each section's own rules are in its schema)."""
    problems = _data_problems(p) + _train_problems(p)
    metric, extractors = p.promote.metric, p.evaluate.extractors
    candidates = list(keys.DOMAIN_EXTRACTORS) if metric == AUTO_METRIC else [keys.extractor_of(metric)]
    if not set(extractors) & set(candidates):
        needed = " or ".join(repr(c) for c in candidates)
        allowed = get_args(PromoteConfig.model_fields["metric"].annotation)
        usable = ", ".join(m for m in allowed if m != AUTO_METRIC and keys.extractor_of(m) in extractors)
        problems.append(
            f"promote.metric = {metric!r} needs the {needed} extractor, but evaluate.extractors = {extractors}: "
            f"set promote.metric to one of {usable}, or add {needed} to evaluate.extractors"
        )
    if problems:
        lines = "\n".join(f"  - {m}" for m in problems)
        raise ConfigError(f"{source}: {len(problems)} invalid setting(s); no stage was run.\n{lines}")


def validate(raw: Any, source: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    _check_across_sections(params, source)
    return params


def load_params(path: str | Path = "params.yaml", overrides: list[str] | dict[str, Any] | None = None) -> Params:
    """Read, apply `KEY=VALUE` overrides, validate. Raises ConfigError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return validate(apply_overrides(raw or {}, overrides), source=str(path))


def section_hash(*sections: BaseModel) -> str:
    """Stable hash of config sections: decides whether a checkpoint may be resumed."""
    blob = json.dumps([s.model_dump(mode="json") for s in sections], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def save_overrides(path: str | Path, overrides: list[str] | dict[str, Any]) -> Params:
    """Validate `overrides` against `path`, then write them into it, keeping its comments.

    Used by the Prefect flow: after it, params.yaml says what was run, so `dvc repro`
    and `dvc status` agree with the flow.
    """
    from ruamel.yaml import YAML

    params = load_params(path, overrides)  # raises ConfigError before anything is written
    rt = YAML()
    rt.preserve_quotes = True
    path = Path(path)
    doc = rt.load(path.read_text()) if path.exists() else {}
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides]
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else key
        node = doc
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    buf = io.StringIO()
    rt.dump(doc, buf)
    atomic.write_text(path, buf.getvalue())
    return params
