"""torchrun on the CPU (gloo): two processes train as one with the same global batch, and the
paper entry point runs under torchrun."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(n: int, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run under torchrun; a second try on another port if the first fails (the free port we
    probe may be taken by another process, e.g. a dask cluster of another test, before
    torchrun binds it). A real failure fails both tries."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for _ in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", *args]
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode == 0:
            break
    return done


def test_two_processes_train_as_one(tiny_cvppp, tmp_path):
    for n in (1, 2):
        done = torchrun(n, str(ROOT / "tests" / "ddp_train.py"), str(tiny_cvppp), str(tmp_path / f"run{n}"))
        assert done.returncode == 0, done.stderr[-2000:]
    one = torch.load(tmp_path / "run1" / "last.ckpt", weights_only=True)["model_weights"]
    two = torch.load(tmp_path / "run2" / "last.ckpt", weights_only=True)["model_weights"]
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)
    assert torch.load(tmp_path / "run2" / "last.ckpt", weights_only=True)["iteration"] == 3


def test_main_py_under_torchrun(tiny_cvppp, tmp_path):
    sets = [f"DATA.data_dir={tiny_cvppp}", "DATA.padded_size=[80, 80]", "DATA.crop_size=[64, 64]",
            "DATA.num_workers=0", "MODEL.filters=[4, 4, 8, 8, 16]", "TRAIN.iterations=2", "TRAIN.batch_size=4",
            "TRAIN.valid_every=2", "TRAIN.save_every=2", f"TRAIN.model_dir={tmp_path}", "TRAIN.device=cpu"]
    done = torchrun(2, "main.py", "-c=cvppp_demo", *sum((["--set", s] for s in sets), []), cwd=ROOT / "scripts_cvppp")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "cvppp_demo" / "last.ckpt").is_file() and (tmp_path / "cvppp_demo" / "best.ckpt").is_file()
    # rank 0 alone speaks: one start line naming the two processes, one run folder line
    said = done.stdout + done.stderr
    assert said.count("training cvppp_demo on cpu with 2 process(es)") == 1
    assert said.count("run folder:") == 1 and said.count("threads:") == 1
