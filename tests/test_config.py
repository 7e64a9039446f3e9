from pathlib import Path

import pytest
import yaml

from gan.core.config import ConfigError, Params, load_params

from .conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(text)
    return p


def test_repo_params_valid_and_complete():
    """params.yaml must list every key: DVC tracks params by key and fails on a missing one."""
    params = load_params(REPO / "params.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, model in Params.model_fields.items():
        assert set(raw[section]) == set(model.annotation.model_fields), section
    assert params.data.dataset == "fashion-mnist"


@pytest.mark.parametrize(
    "text, key, fragments",
    [
        ("train:\n  epochs: -1\n", "train.epochs", ["= -1", "greater than or equal to 0"]),
        ("train:\n  epochs: 5\n  kimg: 300\n", "train.epochs = 5", ["train.kimg = 300", "both set the length"]),
        ("train:\n  kimg: 0\n", "train.kimg", ["= 0", "'auto' or a number of thousands of images > 0"]),
        ("train:\n  kimg: lots\n", "train.kimg", ["'lots'"]),
        ("train:\n  eval_every: -5\n", "train.eval_every", ["= -5"]),
        ("classifier:\n  steps: 0\n", "classifier.steps", ["= 0", "'auto' or a number of steps >= 1"]),
        ("judge:\n  steps: many\n", "judge.steps", ["'many'"]),
        ("judge:\n  epochs: 1\n", "judge.epochs", ["unknown key", "steps"]),
        ("train:\n  epochs: 2.5\n", "train.epochs", ["= 2.5", "integer"]),
        ("train:\n  epochs: '5'\n", "train.epochs", ["= '5'", "integer"]),
        ("train:\n  lr_g: -1\n", "train.lr_g", ["= -1", "greater than 0"]),
        ("train:\n  lr_g: abc\n", "train.lr_g", ["'abc'", "number"]),
        ("model:\n  arch: stylegan\n", "model.arch", ["'stylegan'", "'mlp', 'dcgan', 'resnet' or 'fastgan'"]),
        ("train:\n  loss: wgan\n", "train.loss", ["'wgan'", "'ns', 'hinge' or 'wgan-gp'"]),
        ("train:\n  augment: colour\n", "train.augment", ["'colour'", "allowed color, translation, cutout"]),
        ("train:\n  augment: color,color\n", "train.augment", ["named twice"]),
        ("train:\n  ema_decay: 1.0\n", "train.ema_decay", ["less than 1"]),
        ("train:\n  d_steps: 0\n", "train.d_steps", ["greater than or equal to 1"]),
        ("data:\n  dataset: cifar\n", "data.dataset", ["'cifar'", "'kmnist', 'cifar10' or 'folder'"]),
        ("train:\n  device: gpu\n", "train.device", ["'gpu'", "pattern"]),
        ("train:\n  epoch: 3\n", "train.epoch", ["unknown key", "epochs"]),
        ("trian:\n  epochs: 3\n", "trian", ["unknown key", "train"]),
        ("train:\n  beta1: 1.0\n", "train.beta1", ["less than 1"]),
        ("data:\n  mirrors: file:///x\n", "data.mirrors", ["list"]),
    ],
)
def test_invalid_values_name_key_value_and_rule(tmp_path, text, key, fragments):
    with pytest.raises(ConfigError) as info:
        load_params(write(tmp_path, text))
    msg = str(info.value)
    assert f"  - {key} " in msg, msg
    assert "no stage was run" in msg
    for f in fragments:
        assert f in msg, msg


def test_all_errors_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_params(write(tmp_path, "train:\n  epochs: -1\n  batch_size: 0\nmodel:\n  z_dim: x\n"))
    assert "3 invalid setting(s)" in str(info.value)


def test_not_yaml_and_not_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(write(tmp_path, "- 1\n- 2\n"))


def test_overrides_are_validated_by_the_same_schema(tmp_path):
    p = write(tmp_path, "train:\n  epochs: 3\n")
    assert load_params(p, ["train.epochs=7", "model.arch=mlp"]).train.epochs == 7
    assert load_params(p, {"train.lr_d": 0.001}).train.lr_d == 0.001
    with pytest.raises(ConfigError, match=r"train.epochs = -2"):
        load_params(p, ["train.epochs=-2"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_params(p, ["train.epochs"])


def test_cli_help_lists_every_command_with_one_line(capsys):
    from gan.cli import COMMANDS, STAGES, TOOLS, main

    assert list(COMMANDS) == [*STAGES, "check", *TOOLS]  # a new stage or tool needs its line
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name, what in COMMANDS.items():
        assert f"  {name:<11} {what}\n" in out
    with pytest.raises(SystemExit):
        main(["--set", "train.epochs=1", "sample"])
    assert "sample takes its own options: python -m gan sample -h" in capsys.readouterr().err


def test_cli_check_exits_2_without_running(tmp_path, capsys):
    from gan.cli import main

    p = write(tmp_path, "train:\n  epochs: -1\n")
    assert main(["train", "--params", str(p)]) == 2
    err = capsys.readouterr().err
    assert "train.epochs = -1" in err and "no stage was run" in err


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["train.cuda_graph=true", "train.augment=color"], "would replay the same random augmentation"),
        (["train.cuda_graph=true", "train.r1_gamma=1.0"], "lazy R1 changes the step"),
        (["train.cuda_graph=true", "train.loss=wgan-gp"], "the penalty's random interpolation"),
        (["model.arch=resnet", "data.resolution=128"], "model.arch = 'resnet' is built for 28, 32, 64 px"),
        (["train.compile=true", "train.r1_gamma=1.0"], "which torch.compile does not support"),
        (["train.eval_every=0"], "the best snapshot needs scores during training"),
        (["train.epochs=3", "train.kimg=100"], "both set the length of training"),
        (["train.ada_target=0.6"], "adaptive augmentation needs policies to apply"),
    ],
)
def test_parts_that_cannot_run_together_are_refused_before_any_stage(overrides, fragment):
    with pytest.raises(ConfigError, match="no stage was run") as info:
        load_params(REPO / "params.yaml", overrides)
    assert fragment in str(info.value)


def test_augment_policies_are_normalised():
    p = load_params(REPO / "params.yaml", ["train.augment= color , cutout"])
    assert p.train.augment == "color,cutout" and p.train.augment_policies == ("color", "cutout")
    assert load_params(REPO / "params.yaml").train.augment_policies == ()


def test_the_refusals_read_the_properties_of_the_loss_and_the_architecture(monkeypatch):
    """Not the names: a loss with a gradient penalty, or an unconditional architecture, is refused whatever it is
    called."""
    from gan.core.architectures import ARCHITECTURES, LOSS_SPECS, ArchSpec, LossSpec

    load_params(REPO / "params.yaml", ["train.compile=true", "train.loss=hinge", "model.conditional=true"])
    monkeypatch.setitem(LOSS_SPECS, "hinge", LossSpec("hinge", "hinge", gradient_penalty=True))
    monkeypatch.setitem(ARCHITECTURES, "dcgan", ArchSpec("dcgan", "dcgan", (28, 32, 64, 128), (1, 3), False))
    with pytest.raises(ConfigError) as info:
        load_params(REPO / "params.yaml", ["train.compile=true", "train.loss=hinge", "model.conditional=true"])
    msg = str(info.value)
    assert "train.compile with train.loss = 'hinge' (a gradient penalty)" in msg
    assert "model.arch = 'dcgan' with model.conditional = true: dcgan is unconditional" in msg
    with pytest.raises(ConfigError, match="train.cuda_graph with train.loss = 'hinge': the penalty's random"):
        load_params(REPO / "params.yaml", ["train.cuda_graph=true", "train.loss=hinge"])


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["train.compile=true", "train.loss=wgan-gp"], "train.compile with train.loss = 'wgan-gp' (a gradient"),
        (["model.arch=fastgan", "data.resolution=32", "model.conditional=true"], "or model.arch = 'mlp' or 'dcgan'"),
    ],
)
def test_loss_and_architecture_refusals_name_the_setting(overrides, fragment):
    with pytest.raises(ConfigError, match="no stage was run") as info:
        load_params(REPO / "params.yaml", overrides)
    assert fragment in str(info.value)


def test_compile_is_refused_on_several_processes():
    """Under DDP, G's update scores the fakes with D's own module: a compiled DDP wrapper would leave it eager."""
    from gan.core.config import TrainConfig, check_processes

    check_processes(TrainConfig(compile=True), 1)
    check_processes(TrainConfig(compile=False), 4)
    with pytest.raises(ConfigError) as info:
        check_processes(TrainConfig(compile=True), 2)
    assert str(info.value).startswith("train.compile with 2 processes (torchrun --nproc_per_node = WORLD_SIZE = 2)")
    assert "turn train.compile off, or train on one process" in str(info.value)
