"""Shared fixtures (shared helpers that are not fixtures live in tests/helpers.py).

Benchmark images are found through the zoo's data root setting (ZOO_DATA_ROOT, else
../shared/datasets beside the repo); they are never copied into the repo."""

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data_root():
    """The benchmark data root; skipped (failed under CI=true) when it cannot be found."""
    from zoo.data.datasets import resolve_data_root
    from zoo.errors import ZooError

    try:
        return resolve_data_root()
    except ZooError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the benchmark images: {err}")
        pytest.skip(str(err))


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (restored afterwards): tiny models run fastest that way and
    leave the other core to the rest of the suite. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
