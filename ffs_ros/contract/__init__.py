"""The model contract: what an FFS-family model file is and how its graphs fit together.

FFS stands for Fast-FoundationStereo. The contract sits below both ``ffs_ros.model`` (which
produces models in this contract) and ``ffs_ros.inference`` (which runs them); it imports nothing
from either. See ../shared/docs/ffs-model-contracts.md for the upstream facts (in our words).

* :mod:`.files` -- tensor names, reading ONNX graphs and ``onnx.yaml``, recognising which contract
  a model follows (:func:`detect_model` -> :class:`ModelSource`).
* :mod:`.gwc` -- the group-wise correlation volume built between the two graphs (torch for
  training, numpy/BLAS for CPUs, one batched torch pass into a preallocated buffer for devices).
* :mod:`.wiring` -- the feature -> volume -> post wiring and tensor shapes at one network size.
"""

from .files import (
    CHECKPOINT_SUFFIXES,
    CONFIDENCE_OUTPUT,
    ENGINE_SUFFIXES,
    EXPECTED_LAYOUTS,
    FEATURE_FILE,
    FEATURE_INPUTS,
    GWC_INPUT,
    GWC_SOURCES,
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    MULTIPLE,
    PLUGIN_OP,
    POST_FILE,
    POST_OUTPUT,
    SINGLE_INPUTS,
    SINGLE_OUTPUT,
    YAML_FILE,
    GraphInfo,
    ModelConfig,
    ModelContractError,
    ModelSource,
    TensorSpec,
    detect_model,
    read_config,
    read_graph,
)
from .wiring import (
    StagePlan,
    feature_output_shapes,
    graph_input_shapes,
    imagenet_normalise,
    stage_plan,
    to_nchw,
)

__all__ = [
    'CHECKPOINT_SUFFIXES',
    'CONFIDENCE_OUTPUT',
    'ENGINE_SUFFIXES',
    'EXPECTED_LAYOUTS',
    'FEATURE_FILE',
    'FEATURE_INPUTS',
    'GWC_INPUT',
    'GWC_SOURCES',
    'IMAGENET_MEAN_255',
    'IMAGENET_STD_255',
    'MULTIPLE',
    'PLUGIN_OP',
    'POST_FILE',
    'POST_OUTPUT',
    'SINGLE_INPUTS',
    'SINGLE_OUTPUT',
    'YAML_FILE',
    'GraphInfo',
    'ModelConfig',
    'ModelContractError',
    'ModelSource',
    'StagePlan',
    'TensorSpec',
    'detect_model',
    'feature_output_shapes',
    'graph_input_shapes',
    'imagenet_normalise',
    'read_config',
    'read_graph',
    'stage_plan',
    'to_nchw',
]
