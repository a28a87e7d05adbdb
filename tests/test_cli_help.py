"""Every command-line flag of every entry point says what it does, and ``--version`` works."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import pytest

import transtic
from transtic.cli import build_parser, main


def actions(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from actions(sub, f"{prefix}{name} ")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield f"{prefix}{'/'.join(action.option_strings) or action.dest}", action


def parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    from transtic.evaluation.cli import build_parser as evaluation_parser
    from transtic.training.cli import build_parser as training_parser
    from transtic.weights.cli import _parser as weights_parser

    yield "transtic", build_parser()
    yield "transtic weights", weights_parser("transtic weights")
    yield "transtic.training", training_parser()
    yield "transtic.evaluation", evaluation_parser()
    services = pytest.importorskip("services.encoder.cli")
    yield "services.encoder", services.build_parser()
    from services.analytics.settings import Settings
    from services.common.settings import add_settings_arguments

    analytics = argparse.ArgumentParser(prog="services.analytics")
    add_settings_arguments(analytics, Settings)
    yield "services.analytics", analytics


@pytest.mark.parametrize(("program", "parser"), list(parsers()), ids=lambda x: str(x)[:30])
def test_every_flag_has_help(program: str, parser: argparse.ArgumentParser) -> None:
    missing = [name for name, action in actions(parser) if not (action.help or "").strip()]
    assert not missing, f"{program}: flags without help: {missing}"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"transtic {transtic.__version__}"
