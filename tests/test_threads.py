"""Thread settings: --threads, OMP_NUM_THREADS, and the default of every core."""
import pytest
import torch

from pea.threads import configure_threads, cpu_cores, default_threads, worker_init


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_explicit_env_and_default(monkeypatch, restore_threads):
    note = configure_threads(3, num_workers=2)
    assert torch.get_num_threads() == 3 and note.startswith("threads: 3 in the main process + 1 in each of 2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    configure_threads(None, num_workers=0)
    assert torch.get_num_threads() == 1  # the user's OMP_NUM_THREADS is kept
    monkeypatch.delenv("OMP_NUM_THREADS")
    configure_threads(None, num_workers=1)
    assert torch.get_num_threads() == default_threads() == cpu_cores()


def test_workers_use_one_thread(restore_threads):
    torch.set_num_threads(2)
    worker_init(0)
    assert torch.get_num_threads() == 1
