"""Every configuration key has a description, and docs/configuration.md is the generated reference."""

from __future__ import annotations

from pathlib import Path

from pipeline.ops.config_doc import config_classes, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_every_parameter_is_described():
    for cls in config_classes():
        for name, param in cls.get_params():
            assert param.description and len(param.description) > 15, f"[{cls.__name__}] {name} needs a description"


def test_configuration_reference_is_current():
    assert DOC.read_text() == render(), "regenerate: python -m pipeline.ops.config_doc > docs/configuration.md"


def test_luigi_cfg_sets_only_known_keys():
    import configparser

    known = {cls.__name__: {name for name, _ in cls.get_params()} for cls in config_classes()}
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(DOC.parents[1] / "luigi.cfg")
    for section in cfg.sections():
        if section in known:
            unknown = set(cfg[section]) - known[section]
            assert not unknown, f"luigi.cfg [{section}] has keys no Config class reads: {unknown}"
