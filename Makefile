# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv from the pinned requirements first.
VENV := .venv
PY := $(VENV)/bin/python
ROBOT ?= franka
DURATION ?= 20
# DDS stays on loopback; each make run on its own domain (tests pick a fresh domain per test on top of this).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 42
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv demo test bench clean

$(VENV)/.installed: requirements.txt requirements-nodeps.txt setup.py
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing pinned requirements into $(VENV) (log: $(VENV)/pip.log)"
	@$(PY) -m pip install -r requirements.txt > $(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install --no-deps -r requirements-nodeps.txt >> $(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install --no-deps --no-build-isolation -e . >> $(VENV)/pip.log 2>&1 || { tail -30 $(VENV)/pip.log; exit 1; }
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/vla-ros demo --robot $(ROBOT) --duration $(DURATION)

test: venv
	$(PY) -m pytest -q test

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
