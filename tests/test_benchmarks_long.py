"""The longest benchmark smoke runs (see test_benchmarks.py, which holds what each
script must print): a module of their own, so the two test workers share the runs."""

import pytest

from test_benchmarks import LONG_RUNS, run_ids, run_smoke


@pytest.mark.slow
@pytest.mark.parametrize("script,flags", LONG_RUNS, ids=run_ids(LONG_RUNS))
def test_long_benchmark_smoke(script, flags, tmp_path):
    run_smoke(script, flags, tmp_path)
