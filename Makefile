# make demo: install what is missing, generate CVPPP look-alike data, train cvppp_demo on the CPU
#            (or GPU), run validation inference and print the mean scores.
# make test: install what is missing and run the test suite (under xvfb-run when there is no
#            display: the napari plugin's tests open a viewer).
PYTHON ?= python3
SYNTH_CVPPP := data/CVPPP_synth
DEMO_RUN := cvppp_demo

# the X server and libraries napari's Qt window needs headless (Debian; installed when root)
GUI_DEBS := xvfb xauth libglib2.0-0 libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon-x11-0 libdbus-1-3 \
	libfontconfig1 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxcb-xfixes0 libxcb-cursor0
# runs a command under a virtual X server when there is no display
HEADLESS = $$( [ -z "$$DISPLAY" ] && command -v xvfb-run >/dev/null && echo xvfb-run -a )

.PHONY: install system-packages demo demo-cvppp demo-bbbc039v1 demo-ac3ac4 test test-all bench napari-screenshot

install: system-packages
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	@$(PYTHON) -c "import pea._overlap, elf, waterz, mahotas, tensorboardX, zarr, dask, distributed, pytest, \
		pytestqt, ome_zarr, ome_zarr_models, bioimageio.core, napari, PyQt6" \
		2>/dev/null || $(PYTHON) -m pip install -q -e ".[em,blockwise,bioimageio,napari,test]"

system-packages:
	@if ! command -v xvfb-run >/dev/null || ! dpkg -s $(GUI_DEBS) >/dev/null 2>&1; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				$(GUI_DEBS) >/dev/null; \
		else echo "notice: the napari tests need an X server: install $(GUI_DEBS)"; fi; fi

demo: demo-cvppp

demo-cvppp: install
	$(PYTHON) -m pea.cli synth cvppp --out $(SYNTH_CVPPP) --seed 1 --n-train 60 --n-test 6 --n-valid 10
	rm -rf models/$(DEMO_RUN) inference/$(DEMO_RUN)
	cd scripts_cvppp && $(PYTHON) main.py -c=cvppp_demo
	cd scripts_cvppp && $(PYTHON) inference.py -c=cvppp_demo -mn=$(DEMO_RUN) -id=best -m=validation

# make demo-bbbc039v1: BBBC039V1 look-alike images, train bbbc039v1_demo, segment the test
# images (the predicted foreground masks the Mutex Watershed) and print the mean scores last.
BBBC_RUN := bbbc039v1_demo
demo-bbbc039v1: install
	rm -rf data/BBBC039V1_synth models/$(BBBC_RUN) inference/$(BBBC_RUN)
	$(PYTHON) -m pea.cli synth bbbc039 --out data/BBBC039V1_synth --seed 1 --n-train 40 --n-valid 3 --n-test 10
	cd scripts_bbbc039v1 && $(PYTHON) main.py -c=bbbc039v1_demo
	cd scripts_bbbc039v1 && $(PYTHON) inference.py -c=bbbc039v1_demo -mn=$(BBBC_RUN) -id=best -m=test

# make demo-ac3ac4: AC3/AC4 look-alike volumes, train ac3ac4_demo, then score the untrained
# (initial) and the trained network on the test volume with waterz, multicut and Mutex Watershed.
AC_RUN := ac3ac4_demo
demo-ac3ac4: install
	$(PYTHON) -m pea.cli synth ac3ac4 --out data/AC3-AC4_synth --seed 1 --depth 32 --size 160 --test-depth 16
	rm -rf models/$(AC_RUN) models/$(AC_RUN)_untrained inference/$(AC_RUN) inference/$(AC_RUN)_untrained
	cd scripts_ac3ac4 && $(PYTHON) main.py -c=ac3ac4_demo
	cd scripts_ac3ac4 && $(PYTHON) untrained.py -c=ac3ac4_demo
	mkdir -p inference/$(AC_RUN)_untrained inference/$(AC_RUN)
	cd scripts_ac3ac4 && $(PYTHON) inference.py -c=ac3ac4_demo -mn=$(AC_RUN)_untrained -id=init -m=ac3 \
		-waterz -mutex > ../inference/$(AC_RUN)_untrained/summary.txt
	cd scripts_ac3ac4 && $(PYTHON) inference.py -c=ac3ac4_demo -mn=$(AC_RUN) -id=best -m=ac3 \
		-waterz -mutex > ../inference/$(AC_RUN)/summary.txt
	@echo "== AC3 look-alike, untrained network (the initial weights of the run) =="
	@cat inference/$(AC_RUN)_untrained/summary.txt
	@echo "== AC3 look-alike, trained network (best validation VOI) =="
	@cat inference/$(AC_RUN)/summary.txt

test: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(HEADLESS) $(PYTHON) -m pytest -q -m "not slow"

test-all: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(HEADLESS) $(PYTHON) -m pytest -q

# make napari-screenshot CKPT=models/cvppp_demo/best.ckpt: images/napari_widget.png (docs/export.md)
CKPT ?= models/cvppp_demo/best.ckpt
napari-screenshot: install
	OMP_NUM_THREADS=1 $(HEADLESS) $(PYTHON) docs/napari_screenshot.py --model $(CKPT) --out images/napari_widget.png

bench: install
	$(PYTHON) benchmarks/bench_targets.py
	$(PYTHON) benchmarks/bench_metrics.py --quick
	$(PYTHON) benchmarks/bench_inference.py --quick
	$(PYTHON) benchmarks/bench_train.py --quick
