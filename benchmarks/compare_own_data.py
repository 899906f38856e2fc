"""`pea train` on a plain folder against the BBBC039V1 scripts on the same look-alike nuclei and
the same settings: `pea synth bbbc039` writes the data in both layouts (same seed, same images),
`scripts_bbbc039v1/main.py -c=bbbc039v1_demo` trains on the BBBC039V1 layout, `pea train
--preset nuclei-small` with the demo's resolution, strides and speck size (--set) on the plain
one. Prints each run's iterations, wall time and validation scores per evaluation (from its
log.txt), and which checkpoint each run made best.ckpt.

    python benchmarks/compare_own_data.py [--iterations 300] [--valid-every 100] [--out /tmp/pea_compare]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAME = ["DATA.scale=0.5", "TEST.strides=[5, 5]", "TEST.fg_min_size=6"]  # the demo's, which the preset leaves out


def run(argv: list[str], cwd: Path) -> float:
    """Run a command (with this checkout's `pea`); its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def scores(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith(("valid ", "best.ckpt"))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--valid-every", type=int, default=100)
    p.add_argument("--out", default="/tmp/pea_compare")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from hardware import describe

    out = Path(args.out).resolve()
    synth = [sys.executable, "-m", "pea.cli", "synth", "bbbc039", "--seed", "1", "--n-train", "40", "--n-valid", "3",
             "--n-test", "10"]
    for layout in ("bbbc039", "plain"):
        if not (out / layout).is_dir():
            run(synth + ["--out", str(out / layout), "--layout", layout], ROOT)
    n, every = str(args.iterations), [f"TRAIN.valid_every={args.valid_every}", f"TRAIN.save_every={args.valid_every}"]
    script = [sys.executable, "main.py", "-c=bbbc039v1_demo", "--run", "scripts", "--device", "cpu",
              "--set", f"DATA.data_dir={out / 'bbbc039'}", "--set", f"TRAIN.model_dir={out / 'runs'}",
              "--set", f"TRAIN.iterations={n}"] + [arg for item in every for arg in ("--set", item)]
    train = [sys.executable, "-m", "pea.cli", "train", "--data", str(out / "plain"), "--preset", "nuclei-small",
             "--out", str(out / "runs" / "pea_train"), "--iterations", n, "--device", "cpu"]
    train += [arg for item in SAME + every for arg in ("--set", item)]
    print(f"hardware: {describe('cpu')}")
    for name, argv, cwd in (("scripts_bbbc039v1 main.py -c=bbbc039v1_demo", script, ROOT / "scripts_bbbc039v1"),
                            ("pea train --preset nuclei-small (plain folder)", train, ROOT)):
        folder = out / "runs" / ("scripts" if "main.py" in argv else "pea_train")
        if folder.exists():
            subprocess.run(["rm", "-rf", str(folder)], check=True)
        seconds = run(argv, cwd)
        print(f"== {name}: {n} iterations, {seconds:.0f} s wall")
        for line in scores(folder / "log.txt"):
            print(f"   {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
