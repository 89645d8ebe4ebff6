# SPDX-License-Identifier: GPL-2.0-only
"""tlshd's own command line: ``quichsd [-c FILE] [-s] [-v] [-h]`` without a COMMAND is
``serve``, so a unit or a script written for tlshd works with the program name changed;
a bad option after a COMMAND is answered with that command's usage."""

from __future__ import annotations

from pathlib import Path

import pytest

from quichsd.cli import main


def _bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "tlshd.conf"
    path.write_text("[quichsd]\nworkers=many\n")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "{config}", "-s"],
        ["--config", "{config}", "--stderr"],
        ["serve", "-c", "{config}", "-s"],
    ],
)
def test_without_a_command_it_serves(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The configuration named with -c is the one serve reads (its error names it)."""
    config = _bad_config(tmp_path)
    assert main([a.format(config=config) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"quichsd: {config}:2"), err
    assert "workers" in err


@pytest.mark.parametrize("argv", [["-v"], ["--version"], ["serve", "-v"]])
def test_version_as_tlshd_prints_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert capsys.readouterr().err.startswith("quichsd ")


def test_help_shows_the_tlshd_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["-h"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: quichsd [-h] [-c PATH] [-s] [-v] [COMMAND ...]")
    assert "Without a COMMAND, quichsd serves" in out


@pytest.mark.parametrize(
    "argv,usage",
    [
        (["serve", "--bogus"], "usage: quichsd serve [-h] [-c PATH] [-s] [-v]"),
        (["check", "-x"], "usage: quichsd check [-h] [-c PATH]"),
        (["--bogus"], "usage: quichsd [-h] [-c PATH] [-s] [-v] [COMMAND ...]"),
    ],
)
def test_a_bad_option_shows_its_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    assert f"error: unrecognized arguments: {argv[-1]}" in err


def test_serve_options_before_another_command_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["-s", "check"])
    assert "-c, -s and -v before a COMMAND are serve's" in capsys.readouterr().err
