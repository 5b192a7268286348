"""Bad input to the CLIs and helpers that had no test: one clear error each (what was wrong, what
was expected), and the small pure helpers checked against values computed by hand."""

from __future__ import annotations

import pytest

from autovit_ray import profile
from autovit_ray.latency.validate import error_metrics
from autovit_ray.search.driver import TRIAL_CPUS, evaluator_share
from autovit_ray.space import __main__ as space_cli


def test_space_describe_of_an_unknown_space_says_what_exists(capsys):
    assert space_cli.main(["describe", "nope"]) == 2
    assert "unknown search space 'nope': expected one of ['xxs', 'xs', 's']" in capsys.readouterr().err


def test_profile_breakdown_bad_input(capsys):
    assert profile.main(["breakdown", "--supernet", "nope"]) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err
    assert profile.main(["breakdown", "--supernet", "xxs", "--arch", "nope"]) == 2
    assert "--arch 'nope' is not an arch: expected 'smallest', 'largest'" in capsys.readouterr().err
    assert profile.main(["breakdown", "--supernet", "xxs", "--resolution", "100"]) == 2
    assert "Arch.resolution = 100 is not in the space; allowed: [128, 192, 256]" in capsys.readouterr().err


def test_demo_bad_input(capsys):
    from autovit_ray.demo.__main__ import main as demo_main

    assert demo_main(["--set", "nope=1"]) == 2
    assert "unknown config field nope" in capsys.readouterr().err


def test_error_metrics_by_hand():
    m = error_metrics([1.0, 2.08, 3.27, 4.0], [1.0, 2.0, 3.0, 4.0])
    # relative errors 0, 0.04, 0.09, 0 -> MAPE 3.25 %, 3 of 4 within 5 %, all within 10 %; same order: tau 1
    assert m == {"mape": pytest.approx(3.25), "within_5": 75.0, "within_10": 100.0, "kendall_tau": 1.0,
                 "max_error": pytest.approx(9.0)}
    with pytest.raises(ValueError, match="must be positive"):
        error_metrics([1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="equal-length"):
        error_metrics([1.0, 2.0], [1.0])


def test_evaluator_share_of_the_free_cpus():
    # 2 CPUs, 2 evaluators, 4 trials at TRIAL_CPUS each: (2 - 4 x 0.01) / 2 = 0.98 each
    assert evaluator_share(2.0, 2, 4) == pytest.approx(int(100 * (2 - 4 * TRIAL_CPUS) / 2) / 100)
    assert evaluator_share(16.0, 2, 4) == 1.0  # at most one CPU per actor
    with pytest.raises(ValueError, match="0.05 free CPUs: too few for 8 evaluators"):
        evaluator_share(0.05, 8, 16)


def test_every_command_ends_the_same_way(capsys):
    """cli_exits.cli_main: bad input 2, a failed check 1, Ctrl-C 130 with what is kept (an Interrupted:
    its own message alone)."""
    from autovit_ray.cli_exits import Interrupted, cli_main

    class CheckFailed(Exception):
        pass

    def command(exc: BaseException | None):
        @cli_main(kept="epochs are kept", failed=(CheckFailed,))
        def main(argv=None) -> int:
            if exc is not None:
                raise exc
            return 0
        return main()

    cases = [(None, 0, ""), (ValueError("bad --x: expected y"), 2, "error: bad --x: expected y\n"),
             (CheckFailed("outputs differ"), 1, "error: outputs differ\n"),
             (KeyboardInterrupt(), 130, "\ninterrupted: epochs are kept\n"),
             (KeyboardInterrupt("SIGTERM"), 130, "\ninterrupted (SIGTERM): epochs are kept\n"),
             (Interrupted("search s interrupted after 3 of 8; rerun"), 130, "\nsearch s interrupted after 3 of 8; rerun\n")]
    for exc, code, err in cases:
        assert command(exc) == code
        assert capsys.readouterr().err == err
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        command(RuntimeError("bug"))
