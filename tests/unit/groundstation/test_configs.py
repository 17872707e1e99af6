"""Every shipped configuration file loads and validates; the registry points at real files with right hashes."""

from __future__ import annotations


import pytest

from groundstation.fileio import sha256_file
from helpers import REPO
from groundstation.config import StationConfig, load_station
from groundstation.errors import ConfigError
from groundstation.registry import Registry, load_registry, resolve_model

CONFIGS = REPO / "configs"
def _presets(path):
    from gsp.training.enhancer import load_presets

    return load_presets(path)


LOADERS = {"models.yaml": load_registry, "station.yaml": load_station, "enhancer-presets.yaml": _presets}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert path.name in LOADERS, f"{path.name}: add a loader for it to this test"
    LOADERS[path.name](path)


@pytest.mark.parametrize("path", sorted((CONFIGS / "enhancer-recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_enhancer_recipe_names_only_train_enhancer_options(path):
    from gsp.cli import build_parser
    from gsp.cli.training import apply_recipe

    args = build_parser().parse_args(["train-enhancer", "--recipe", str(path)])
    apply_recipe(args)  # unknown keys are errors
    assert args.out and args.pairs and args.steps


def test_a_recipe_with_an_unknown_option_is_refused(tmp_path):
    from gsp.cli import build_parser
    from gsp.cli.training import apply_recipe

    (tmp_path / "r.yaml").write_text("pairs: p\nout: o\nw-enn: 1.0\n")
    args = build_parser().parse_args(["train-enhancer", "--recipe", str(tmp_path / "r.yaml"), "--steps", "5"])
    with pytest.raises(ConfigError, match="'w-enn' is not an option"):
        apply_recipe(args)
    (tmp_path / "r.yaml").write_text("pairs: p\nout: o\nsteps: 100\n")
    args = build_parser().parse_args(["train-enhancer", "--recipe", str(tmp_path / "r.yaml"), "--steps", "5"])
    apply_recipe(args)
    assert args.steps == 5 and args.preset == "reference-code"  # the command line wins; defaults fill the rest


def test_registry_files_exist_with_their_sha256():
    reg = load_registry()
    for name, entry in reg.models.items():
        path = entry.resolved_path()
        assert path.is_file(), f"{name}: {path} missing"
        assert sha256_file(path) == entry.sha256, f"{name}: sha256 of {path} differs from the registry"
        if entry.card:
            assert (CONFIGS.parent / entry.card).is_file()
        for sidecar in (entry.int_prior, entry.mosaic_synthesis):  # a codec's integer prior and mosaic g_s
            if sidecar is not None:
                assert sha256_file(sidecar.resolved_path()) == sidecar.sha256, f"{name}: {sidecar.path} differs"
    codecs = [reg.models[p.codec] for p in reg.rate_points.values()]
    assert all(c.mosaic_synthesis is not None for c in codecs)  # every rate point decodes its mosaic tuned


def test_duplicate_registry_names_are_refused(tmp_path):
    text = (CONFIGS / "models.yaml").read_text()
    models_end = text.index("rate_points:")
    block = text[text.index("  demo-elic-l0032:"):models_end]
    (tmp_path / "dup.yaml").write_text(text[:models_end] + block + text[models_end:])
    with pytest.raises(ConfigError, match="duplicate name 'demo-elic-l0032'"):
        Registry.model_validate(__import__("groundstation.registry", fromlist=["load_yaml"]).load_yaml(tmp_path / "dup.yaml"))


def test_typos_and_bad_values_are_errors(tmp_path):
    (tmp_path / "s.yaml").write_text("encode:\n  tile_sise: 256\n")
    with pytest.raises(ConfigError, match="tile_sise"):
        load_station(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("encode:\n  tile_size: 100\n")
    with pytest.raises(ConfigError, match="multiple of 64"):
        load_station(tmp_path / "s.yaml")
    assert StationConfig().encode.tile_size == 256


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ConfigError, match="known: demo-elic"):
        resolve_model("no-such-codec", "codec")
