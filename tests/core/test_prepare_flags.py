"""`harness data prepare`: an option that only means something with --archive is a one-line usage error without
one, before anything is generated or unpacked (issue 16: `--max-unpacked-gb` used to be silently ignored)."""

from __future__ import annotations

import pytest

from harness.cli import main


@pytest.mark.parametrize("name", ["mini_coop", "caltech101"])  # embedded (would be generated) and downloaded
@pytest.mark.parametrize("flag, value, says", [
    ("--max-unpacked-gb", "5", "--max-unpacked-gb goes with --archive"),
    ("--into", "sub", "--into goes with --archive"),
])
def test_an_archive_option_without_an_archive_is_one_line_and_does_nothing(isolated_env, capsys, name, flag, value,
                                                                           says):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", name, flag, value])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in lines[0], lines
    assert not (isolated_env / "data").exists()  # nothing generated, nothing unpacked


def test_without_the_option_an_embedded_dataset_is_still_generated(isolated_env, capsys):
    """The control: the same command without the stray option does its work."""
    main(["data", "prepare", "mini_coop"])
    assert "generated: mini_coop" in capsys.readouterr().out
    assert (isolated_env / "data").is_dir()
