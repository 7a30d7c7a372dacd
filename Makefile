# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv from the pinned requirements first.
VENV := .venv
PY := $(VENV)/bin/python
ROBOT ?= franka
DURATION ?= 20
DEMO_ARGS ?=
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

# interbotix_xs_msgs and control_msgs (the parts we use) are not on PyPI: interfaces/<pkg> holds their definitions,
# generated and compiled here with the Jazzy rosidl toolchain wheels and installed into the venv prefix the way the
# ROS wheels are (lib/*.so, found through the LD_LIBRARY_PATH their .pth bootstrapper sets; Python packages in
# site-packages). Plain cmake, not colcon: two independent packages installed straight into one prefix need nothing
# colcon adds. Rebuilt only when interfaces/, the toolchain pins or the runtime pins change.
INTERFACES := interbotix_xs_msgs control_msgs
INTERFACES_LOG := $(VENV)/interfaces.log
VENV_ABS = $(abspath $(VENV))

$(VENV)/.interfaces: $(VENV)/.installed requirements-interfaces.txt $(shell find interfaces -type f)
	@echo "building ROS interfaces ($(INTERFACES)) into $(VENV) (log: $(INTERFACES_LOG))"
	@$(PY) -m pip install -r requirements-interfaces.txt > $(INTERFACES_LOG) 2>&1 || { tail -30 $(INTERFACES_LOG); exit 1; }
	@for pkg in $(INTERFACES); do \
	  build=$(VENV)/interfaces-build/$$pkg; \
	  { PATH=$(VENV_ABS)/bin:$$PATH cmake -S interfaces/$$pkg -B $$build -G Ninja -DCMAKE_BUILD_TYPE=Release \
	      -DBUILD_TESTING=OFF -DCMAKE_INSTALL_PREFIX=$(VENV_ABS) -DCMAKE_PREFIX_PATH=$(VENV_ABS) \
	      -DPython3_EXECUTABLE=$(VENV_ABS)/bin/python \
	    && PATH=$(VENV_ABS)/bin:$$PATH cmake --build $$build && cmake --install $$build; } >> $(INTERFACES_LOG) 2>&1 \
	    || { tail -30 $(INTERFACES_LOG); echo "building interfaces/$$pkg failed (log: $(INTERFACES_LOG))"; exit 1; }; \
	done
	@touch $@

venv: $(VENV)/.installed $(VENV)/.interfaces

demo: venv
	$(VENV)/bin/vla-ros demo --robot $(ROBOT) --duration $(DURATION) $(DEMO_ARGS)

test: venv
	$(PY) -m pytest -q test

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
