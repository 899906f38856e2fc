# make demo: install what is missing, generate CVPPP look-alike data, train cvppp_demo on the CPU
#            (or GPU), run validation inference and print the mean scores.
# make test: install what is missing and run the test suite.
PYTHON ?= python3
SYNTH_CVPPP := data/CVPPP_synth
DEMO_RUN := cvppp_demo

.PHONY: install demo demo-cvppp demo-bbbc039v1 demo-ac3ac4 test test-all bench

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	@$(PYTHON) -c "import pea._overlap, elf, waterz, tensorboardX, pytest" 2>/dev/null || \
		$(PYTHON) -m pip install -q -e ".[em,test]"

demo: demo-cvppp

demo-cvppp: install
	$(PYTHON) -m pea.cli synth cvppp --out $(SYNTH_CVPPP) --seed 1 --n-train 60 --n-test 6 --n-valid 10
	rm -rf models/$(DEMO_RUN) inference/$(DEMO_RUN)
	cd scripts_cvppp && $(PYTHON) main.py -c=cvppp_demo
	cd scripts_cvppp && $(PYTHON) inference.py -c=cvppp_demo -mn=$(DEMO_RUN) -id=best -m=validation

test: install
	$(PYTHON) -m pytest -q -m "not slow"

test-all: install
	$(PYTHON) -m pytest -q

bench: install
	$(PYTHON) benchmarks/bench_targets.py
	$(PYTHON) benchmarks/bench_metrics.py --quick
