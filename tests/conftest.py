"""Lets the tests import the full-map references of tests/reference.py; shared fixtures."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_cvppp(tmp_path_factory):
    """A small CVPPP look-alike: 6 training plants (2 of them validation), 2 test plants, 80x72."""
    from pea.synth.cvppp import generate_cvppp

    root = tmp_path_factory.mktemp("cvppp")
    generate_cvppp(root, seed=3, n_train=6, n_test=2, n_valid=2, height=80, width=72, min_leaves=4, max_leaves=6)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on shared, oversubscribed cores two threads run small nets ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
