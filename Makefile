# ffs_ros developer entry points. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench gpu-check clean

venv: $(STAMP)

# ROS 2 launch + `ros2 launch` wheels (not on PyPI) for test/test_launch_real.py, if ../shared has them
LAUNCH_WHEELS := $(wildcard ../shared/wheels/ros2-launch/*.whl)

# torch is pinned to the CPU wheel (an unpinned torch pulls GBs of CUDA packages).
$(STAMP): requirements.txt setup.py $(LAUNCH_WHEELS)
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps -e .
ifneq ($(LAUNCH_WHEELS),)
	$(VPY) -m pip install -q ros-ament-index-python ros-lifecycle-msgs osrf-pycommon pyyaml argcomplete packaging
	$(VPY) -m pip install -q --no-deps $(LAUNCH_WHEELS)
endif
	touch $(STAMP)

demo: venv
	$(VENV)/bin/ffs-ros demo --out out/demo

test: venv
	$(VPY) -m pytest -q test

# Every GPU claim in one command, on a machine with CUDA + PyTorch (no venv, ROS or package index needed there):
# writes out/gpu-check.json and prints a table; without CUDA it says so and exits 0.
gpu-check:
	PYTHONPATH=$(CURDIR) $(PY) tools/gpu_check.py $(GPU_CHECK_ARGS)

bench: venv
	$(VENV)/bin/ffs-ros bench --size 640x480

clean:
	rm -rf $(VENV) out build install log *.egg-info
