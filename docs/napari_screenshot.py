"""The napari screenshot of docs/export.md and the README: the plugin's plant sample, the
Segment widget docked beside it and the labels it made with a checkpoint.

    xvfb-run -a python docs/napari_screenshot.py --model CKPT [--config NAME] --out images/napari_widget.png

(`make napari-screenshot CKPT=...` runs it.) It prints the checkpoint and the number of objects.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--config", default=None)
    p.add_argument("--out", default="images/napari_widget.png")
    args = p.parse_args()

    import napari
    from qtpy.QtCore import QEventLoop

    from pea.napari.samples import plant
    from pea.napari.widget import SegmentWidget

    viewer = napari.Viewer(show=False)
    for data, kwargs, kind in plant():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    viewer.layers.selection.active = viewer.layers["plant"]
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="PEA: Segment", area="right")
    widget.checkpoint.value = args.model
    if args.config:
        widget.config.value = args.config
    widget.device.value = "cpu"
    worker = widget.run()
    if worker is None:
        print(widget.status.value, file=sys.stderr)
        return 2
    loop = QEventLoop()
    worker.finished.connect(loop.quit)
    loop.exec()
    viewer.layers["plant"].visible = True
    viewer.window._qt_window.resize(1280, 720)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(args.out, canvas_only=False)
    print(f"{args.out}: {args.model}; {widget.status.value}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
