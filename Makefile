# ffs_ros developer entry points. `make demo` and `make test` work on a fresh clone.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# ROS 2 packages that are not on PyPI, as wheels beside the project (optional: tests skip without them)
WHEELS ?= ../shared/wheels

.PHONY: venv demo test lint bench gpu-check clean venv-jazzy test-jazzy

venv: $(STAMP)

# ROS 2 launch + `ros2 launch` wheels (not on PyPI) for test/test_launch_real.py, if ../shared has them
LAUNCH_WHEELS := $(wildcard $(WHEELS)/ros2-launch/*.whl)

# torch: the version every test ran with. What it installs depends on the index pip reads. On a machine that reaches
# the public index (pypi.org), the Linux torch wheel there is the CUDA build: it pulls several GB of nvidia-* packages
# (harmless, but slow, and unused on a CPU-only machine). For the CPU-only wheel, ask PyTorch's CPU index:
#     make venv TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (the same for venv-jazzy). TORCH_SPEC picks another version or build, e.g. TORCH_SPEC='torch==2.13.0+cpu'.
# With neither set (the default) the commands are exactly `pip install -q torch==2.13.0` with the configured index.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_ARGS = $(TORCH_SPEC)$(if $(TORCH_INDEX), --index-url $(TORCH_INDEX))

$(STAMP): requirements.txt setup.py $(LAUNCH_WHEELS)
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH_ARGS)
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps -e .
	# ROS 2's sensor_msgs_py (not on PyPI) from ../shared when it is there: tests read our clouds with it
	if [ -d $(WHEELS)/sensor-msgs-py ]; then $(VPY) -m pip install -q --no-deps $(WHEELS)/sensor-msgs-py/*.whl; fi
ifneq ($(LAUNCH_WHEELS),)
	$(VPY) -m pip install -q ros-ament-index-python ros-lifecycle-msgs osrf-pycommon pyyaml argcomplete packaging
	$(VPY) -m pip install -q --no-deps $(LAUNCH_WHEELS)
endif
	touch $(STAMP)

demo: venv
	$(VENV)/bin/ffs-ros demo --out out/demo

test: lint
	$(VPY) -m pytest -q test
	$(MAKE) test-jazzy

# What ament_flake8 and ament_pep257 check with their defaults (ruff.toml): 99 columns, pep257 docstrings, quotes,
# import order. (No `ruff format` here: it puts spaces before ':' in slices, which pycodestyle E203 forbids.)
lint: venv
	$(VENV)/bin/ruff check .

# The same suite against the numpy and OpenCV that ROS 2 Jazzy ships (constraints-jazzy.txt), in a second venv
# built from the same requirements; rclpy and the messages are the same PyPI wheels as in .venv.
JVENV := .venv-jazzy
JPY := $(JVENV)/bin/python
JSTAMP := $(JVENV)/.installed

venv-jazzy: $(JSTAMP)

$(JSTAMP): requirements.txt constraints-jazzy.txt setup.py
	$(PY) -m venv $(JVENV)
	$(JPY) -m pip install -q --upgrade pip
	$(JPY) -m pip install -q $(TORCH_ARGS) -c constraints-jazzy.txt
	$(JPY) -m pip install -q -r requirements.txt -c constraints-jazzy.txt
	$(JPY) -m pip install -q --no-deps -e .
	# the distro's paths: ROS 2 message_filters (the node pairs with it where it imports) and sensor_msgs_py, so
	# this run tests the message_filters synchronizer while .venv tests ours
	if [ -d $(WHEELS)/message-filters ]; then $(JPY) -m pip install -q --no-deps $(WHEELS)/message-filters/*.whl \
		$(WHEELS)/sensor-msgs-py/*.whl; fi
	touch $(JSTAMP)

test-jazzy: venv-jazzy
	$(JPY) -c 'import numpy, cv2; print("test-jazzy: numpy", numpy.__version__, "OpenCV", cv2.__version__)'
	$(JPY) -m pytest -q test

# Every GPU claim in one command, on a machine with CUDA + PyTorch (no venv, ROS or package index needed there):
# writes out/gpu-check.json and prints a table; without CUDA it says so and exits 0.
gpu-check:
	PYTHONPATH=$(CURDIR) $(PY) tools/gpu_check.py $(GPU_CHECK_ARGS)

bench: venv
	$(VENV)/bin/ffs-ros bench --size 640x480

clean:
	rm -rf $(VENV) $(JVENV) out build install log *.egg-info
