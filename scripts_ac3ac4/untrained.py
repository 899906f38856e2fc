"""Save the network a training run starts from (the config's seeded initial weights) as a
checkpoint, to score an untrained network next to a trained one:
python untrained.py -c=CONFIG [--run NAME] [--set SECTION.key=VALUE ...]
writes TRAIN.model_dir/NAME/init.ckpt (NAME defaults to <config NAME>_untrained);
then: python inference.py -c=CONFIG -mn=NAME -id=init -m=ac3 --waterz --lmc --mutex."""
import argparse
import sys
from pathlib import Path

from pea.scripts import _config, _run

SCRIPT_DIR = Path(__file__).resolve().parent


def main(argv) -> int:
    p = argparse.ArgumentParser(description="Save the initial (untrained) network as init.ckpt.")
    p.add_argument("-c", "--cfg", required=True, help="config name in config/ (or a .yaml path)")
    p.add_argument("--run", default=None, help="run folder name under TRAIN.model_dir (default: NAME_untrained)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.key=VALUE")
    args = p.parse_args(argv)
    cfg = _config(SCRIPT_DIR, args.cfg, args.overrides)
    from pea.train import Trainer, save_checkpoint

    run_dir = Path(cfg.TRAIN.model_dir) / (args.run or f"{cfg.NAME}_untrained")
    trainer = Trainer(cfg, run_dir)  # seeds torch as the training run does before building the network
    save_checkpoint(run_dir / "init.ckpt", trainer.state())
    print(f"initial network: {run_dir / 'init.ckpt'}")
    return 0


if __name__ == "__main__":
    sys.exit(_run(main, sys.argv[1:]))
