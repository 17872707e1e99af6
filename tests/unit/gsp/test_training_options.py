"""One typed options model per training job: the command line, the UI deployment and the recipes build the same
one, and a bad value is refused naming the option (or the recipe file)."""

from __future__ import annotations

import pytest

from groundstation.errors import ConfigError
from gsp.cli import build_parser, main
from gsp.cli.training import apply_recipe
from gsp.training.options import CodecTrainOptions, EnhancerTrainOptions, load_recipe

from helpers import REPO


def test_the_jobs_use_the_commands_models():
    import gsp.jobs

    assert gsp.jobs.CodecTrainOptions is CodecTrainOptions
    assert gsp.jobs.EnhancerTrainOptions is EnhancerTrainOptions


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "enhancer-recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_is_an_enhancer_options_model(path):
    values = load_recipe(path)
    options = EnhancerTrainOptions.model_validate({k: v for k, v in values.items()
                                                   if k not in ("pairs", "out", "export", "no_train")})
    args = build_parser().parse_args(["train-enhancer", "--recipe", str(path)])
    apply_recipe(args)
    assert args.config == options.arch and args.steps == options.steps and args.init == options.init


def test_a_recipe_with_a_bad_value_names_the_file_and_the_option(tmp_path):
    (tmp_path / "r.yaml").write_text("pairs: p\nout: o\ncrop: 31\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: .*--crop 31"):
        load_recipe(tmp_path / "r.yaml")


def test_bad_training_options_on_the_command_line_are_exit_2(tmp_path, capsys):
    assert main(["train-codec", str(tmp_path), "-o", str(tmp_path / "run"), "--crop", "32"]) == 2
    assert "--crop 32" in capsys.readouterr().err
    (tmp_path / "pairs").mkdir()
    assert main(["train-enhancer", str(tmp_path / "pairs"), "-o", str(tmp_path / "e"), "--qm-noise-p", "2"]) == 2
    assert "--qm-noise-p 2.0" in capsys.readouterr().err


def test_codec_options_defaults_are_the_commands_help():
    text = build_parser()._subparsers._group_actions[0].choices["train-codec"].format_help()
    assert f"default {CodecTrainOptions().lmbda}" in text and f"default {CodecTrainOptions().N};" in text
