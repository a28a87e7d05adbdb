"""One settings→flags generator serves both services: same forms, same validation."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from services.analytics.settings import Settings
from services.common.settings import add_settings_arguments, given_settings, settings_from_args
from services.encoder.cli import build_parser
from services.encoder.cli import settings_from_args as encoder_settings_from_args
from services.encoder.settings import EncoderSettings


@pytest.mark.parametrize(
    "values",
    [
        ["classification", "detection"],
        ["classification,detection"],
        ['["classification", "detection"]'],
    ],
)
def test_list_fields_take_several_values_a_comma_list_or_json(values: list[str]) -> None:
    analytics = settings_from_args(Settings, ["--task-backends", *values])
    assert analytics.task_backends == ["classification", "detection"]
    encoder = encoder_settings_from_args(build_parser().parse_args(["serve", "--tasks", *values]))
    assert encoder.tasks == ["classification", "detection"]


def test_map_fields_take_json_and_refuse_anything_else(capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_from_args(Settings, ["--codec-checkpoints", '{"detection:2": "/d.pth"}'])
    assert settings.codec_checkpoints == {"detection:2": "/d.pth"}
    with pytest.raises(SystemExit):
        settings_from_args(Settings, ["--codec-checkpoints", "detection=/d.pth"])
    assert "--codec-checkpoints: not valid JSON" in capsys.readouterr().err


def test_scalars_are_validated_by_pydantic_and_choices_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ValidationError, match="grpc_port"):
        encoder_settings_from_args(build_parser().parse_args(["serve", "--grpc-port", "high"]))
    for parse in (
        lambda: settings_from_args(Settings, ["--precision", "float64"]),
        lambda: build_parser().parse_args(["serve", "--precision", "float64"]),
    ):
        with pytest.raises(SystemExit):
            parse()
        assert "invalid choice: 'float64'" in capsys.readouterr().err
    assert settings_from_args(Settings, ["--precision", "bfloat16"]).precision == "bfloat16"


def test_a_subset_of_fields_and_never_a_secret() -> None:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, EncoderSettings, ["grpc_port", "client_api_key", "pace"])
    flags = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(flags) == {"grpc_port", "pace"}
    assert "[env TRANSTIC_ENCODER_GRPC_PORT, default 50052]" in (flags["grpc_port"].help or "")
    namespace = parser.parse_args(["--no-pace"])
    assert given_settings(namespace, EncoderSettings) == {"pace": False}
