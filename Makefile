# make demo: install what is missing, generate CVPPP look-alike data, train cvppp_demo on the CPU
#            (or GPU), run validation inference and print the mean scores.
# make test: install what is missing and run the test suite.
PYTHON ?= python3
SYNTH_CVPPP := data/CVPPP_synth
DEMO_RUN := cvppp_demo

.PHONY: install demo demo-cvppp demo-bbbc039v1 demo-ac3ac4 test test-all bench

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	@$(PYTHON) -c "import pea._overlap, elf, waterz, mahotas, tensorboardX, zarr, dask, distributed, pytest" \
		2>/dev/null || $(PYTHON) -m pip install -q -e ".[em,blockwise,test]"

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
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest -q -m "not slow"

test-all: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/bench_targets.py
	$(PYTHON) benchmarks/bench_metrics.py --quick
	$(PYTHON) benchmarks/bench_inference.py --quick
	$(PYTHON) benchmarks/bench_train.py --quick
