"""Progress output: whole lines when stderr is not a terminal (log files, CI)."""

from __future__ import annotations


def test_progress_off_a_terminal_is_whole_lines(capsys):
    from flexdet.progress import progress_bar

    with progress_bar(total=3, desc="work", mininterval=0, miniters=1) as bar:
        for _ in range(3):
            bar.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") >= 2 and "3/3" in err.splitlines()[-1]
