"""Recognise a stereo model from its path and check it against the Fast-FoundationStereo contracts.

Model sources (see ../shared/docs/ffs-model-contracts.md):

* ``two_stage`` -- a directory with ``feature_runner.onnx`` + ``post_runner.onnx`` (+
``onnx.yaml``): the upstream
  export and our own model's export. The caller builds the group-wise correlation volume between
  the graphs.
* ``single`` -- one ONNX with inputs ``left_image``/``right_image`` (ImageNet-normalised on the
0..255 scale) and
  output ``disparity`` (Isaac ROS / NGC style).
* ``plugin`` -- one ONNX with inputs ``left``/``right`` and output ``disp`` whose correlation
volume is a custom
  TensorRT plugin node (op ``FFSGWCVolume``; the fast_foundation_stereo fork's single-engine
  export). Only TensorRT
  runs it, and only with the plugin library loaded (``plugin_library``).
* ``torch`` -- our own checkpoint (``*.pt``), loaded with ``ffs_ros.model.load_model``. A
directory that holds both
  the two-stage export and a checkpoint offers both (``ModelSource.checkpoint`` is set).
* prebuilt TensorRT engines (``<stem>.engine`` or ``<stem>.plan``) next to their ONNX are picked
up into
  ``ModelSource.engines``.

Sizes, channel counts, the number of groups and disparities are read from the graphs; ``onnx.yaml``
supplies only what a graph cannot say (``normalize``, and ``max_disp``/``cv_group`` when the volume
axes are symbolic). Every mismatch raises :class:`ModelContractError` naming the file, what was
found and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FEATURE_FILE = 'feature_runner.onnx'
POST_FILE = 'post_runner.onnx'
YAML_FILE = 'onnx.yaml'
CHECKPOINT_SUFFIXES = ('.pt', '.pth')
ENGINE_SUFFIXES = ('.engine', '.plan', '.trt')
FEATURE_INPUTS = ('left', 'right')
GWC_INPUT = 'gwc_volume'
GWC_SOURCES = ('features_left_04', 'features_right_04')
SINGLE_INPUTS = ('left_image', 'right_image')
SINGLE_OUTPUT = 'disparity'
PLUGIN_OP = 'FFSGWCVolume'
POST_OUTPUT = 'disp'
# Optional second output of the last graph (our models): how sure each disparity is, 0..1
CONFIDENCE_OUTPUT = 'confidence'
MULTIPLE = 32

# ImageNet statistics on the 0..255 scale (single-engine contract: the caller normalises).
IMAGENET_MEAN_255 = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
IMAGENET_STD_255 = np.array([0.229, 0.224, 0.225], np.float32) * 255.0

EXPECTED_LAYOUTS = (
    f'a directory with {FEATURE_FILE} + {POST_FILE} (+ {YAML_FILE}) (Fast-FoundationStereo '
    'two-stage export), '
    f'a single .onnx with inputs left_image/right_image and output disparity (Isaac ROS style), '
    f'or an ffs_ros checkpoint (*.pt)'
)


class ModelContractError(ValueError):
    """A model file does not fit the contract it claims.

    The message names the file, the problem and the fix.
    """


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Dimensions are ints when fixed, strings (or None) when symbolic.
    """

    name: str
    shape: tuple
    dtype: np.dtype

    @property
    def fixed(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


@dataclass(frozen=True)
class GraphInfo:
    """Inputs and outputs of one ONNX graph."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    op_types: frozenset = (
        frozenset()
    )  # operator types of the graph's nodes (custom plugin ops show here)

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


@dataclass
class ModelConfig:
    """Values the graphs cannot tell.

    They come from onnx.yaml, or are checked against the graph where both say something.
    """

    max_disp: int | None = None
    cv_group: int = 8
    normalize: bool = True
    valid_iters: int | None = None
    image_size: tuple[int, int] | None = None
    source: Path | None = None  # the yaml file, if any
    given: frozenset = frozenset()  # keys the yaml actually set


@dataclass
class ModelSource:
    """A recognised model: what kind it is, its files, config and (for ONNX) graph descriptions."""

    kind: str  # 'two_stage', 'single', 'plugin' or 'torch'
    root: Path  # directory (or file) the user named
    config: ModelConfig = field(default_factory=ModelConfig)
    feature: GraphInfo | None = None  # two_stage
    post: GraphInfo | None = None  # two_stage
    single: GraphInfo | None = None  # single and plugin (the one graph)
    checkpoint: Path | None = None  # torch weights (own model), may accompany two_stage
    engines: dict = field(
        default_factory=dict
    )  # 'feature'/'post'/'single' -> prebuilt TensorRT engine path

    @property
    def onnx_files(self) -> dict:
        """Role -> ONNX path."""
        out = {}
        for role in ('feature', 'post', 'single'):
            g = getattr(self, role)
            if g is not None:
                out[role] = g.path
        return out

    @property
    def roles(self) -> tuple[str, ...]:
        """The graphs (engines) this model runs, in order: ('feature', 'post') or ('single',)."""
        return ('feature', 'post') if self.kind == 'two_stage' else ('single',)

    @property
    def image_inputs(self) -> tuple[str, str]:
        """Names of the left/right image inputs of the first graph."""
        return SINGLE_INPUTS if self.kind == 'single' else FEATURE_INPUTS

    @property
    def prenormalised(self) -> bool:
        """True when the caller must ImageNet-normalise the images (single-engine contract)."""
        return self.kind == 'single'

    @property
    def disparity_output(self) -> str:
        """Name of the disparity output of the last graph."""
        if self.kind == 'single':
            return SINGLE_OUTPUT
        if self.kind == 'plugin':
            return POST_OUTPUT
        if self.post is not None and self.post.output(POST_OUTPUT) is None:
            return next(n for n in self.post.output_names if n != CONFIDENCE_OUTPUT)
        return POST_OUTPUT

    @property
    def confidence_output(self) -> str | None:
        """Name of the last graph's confidence output, or None when the model has none.

        Our own models output ``confidence`` beside the disparity; upstream exports do not. A
        checkpoint (torch) always can.
        """
        if self.kind == 'torch':
            return CONFIDENCE_OUTPUT
        g = self.post if self.kind == 'two_stage' else self.single
        if g is not None and g.output(CONFIDENCE_OUTPUT) is not None:
            return CONFIDENCE_OUTPUT
        return None

    @property
    def network_size(self) -> tuple[int, int] | None:
        """(H, W) the graphs are fixed to, or None when the spatial axes are symbolic.

        Symbolic spatial axes take any multiple of 32.
        """
        g = self.feature if self.kind == 'two_stage' else self.single
        if g is None:
            return None
        spec = g.input(self.image_inputs[0])
        h, w = spec.shape[2], spec.shape[3]
        if isinstance(h, int) and isinstance(w, int):
            return h, w
        return None

    @property
    def num_groups(self) -> int:
        """G of the correlation volume: from the post graph when fixed there, else the config."""
        if self.post is not None:
            g = self.post.input(GWC_INPUT).shape[1]
            if isinstance(g, int):
                return g
        return self.config.cv_group

    @property
    def num_disparities(self) -> int:
        """D = max_disp // 4 of the correlation volume.

        Taken from the post graph when fixed there, else from the config.
        """
        if self.post is not None:
            d = self.post.input(GWC_INPUT).shape[2]
            if isinstance(d, int):
                return d
        if self.config.max_disp is None:
            raise ModelContractError(
                f'{self.root}: the post graph leaves the disparity axis of {GWC_INPUT} symbolic '
                'and no max_disp '
                f'is given; add "max_disp: <multiple of 32>" to {YAML_FILE}'
            )
        return self.config.max_disp // 4

    @property
    def gwc_dtype(self) -> np.dtype:
        return self.post.input(GWC_INPUT).dtype if self.post is not None else np.dtype(np.float32)

    def describe(self) -> str:
        if self.kind == 'two_stage':
            size = self.network_size
            size_s = f'{size[1]}x{size[0]}' if size else 'dynamic size'
            return (
                f'two-stage ONNX {self.root} ({size_s}, G={self.num_groups}, '
                f'D={self.num_disparities}, '
                f'normalize={self.config.normalize})'
            )
        if self.kind == 'single':
            return f'single-engine ONNX {self.single.path}'
        if self.kind == 'plugin':
            return f'single-engine ONNX with the {PLUGIN_OP} TensorRT plugin {self.single.path}'
        return f'torch checkpoint {self.checkpoint}'


# -------------------------------------------------------------------------------------------------
# graph introspection


def read_graph(path: Path) -> GraphInfo:
    """Inputs/outputs of an ONNX file (weights are not loaded into memory beyond the protobuf)."""
    import onnx
    from onnx import helper

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for bad files
        raise ModelContractError(
            f'{path} is not a readable ONNX file ({exc}); re-export the model'
        ) from exc
    graph = model.graph
    initialisers = {t.name for t in graph.initializer}

    def spec(vi) -> TensorSpec:
        tt = vi.type.tensor_type
        dims = []
        for d in tt.shape.dim:
            if d.HasField('dim_value'):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        return TensorSpec(
            vi.name, tuple(dims), np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        )

    inputs = tuple(spec(v) for v in graph.input if v.name not in initialisers)
    outputs = tuple(spec(v) for v in graph.output)
    return GraphInfo(path, inputs, outputs, frozenset(n.op_type for n in graph.node))


def read_config(path: Path | None) -> ModelConfig:
    """Parse onnx.yaml (training-args dump).

    Missing file -> defaults (normalize true, cv_group 8).
    """
    cfg = ModelConfig()
    if path is None or not Path(path).is_file():
        return cfg
    try:
        data = _load_yaml(Path(path).read_text()) or {}
    except Exception as exc:  # noqa: BLE001
        raise ModelContractError(f'{path} is not valid YAML ({exc}); fix or delete it') from exc
    if not isinstance(data, dict):
        raise ModelContractError(
            f'{path} must be a YAML mapping (key: value lines), got {type(data).__name__}'
        )
    cfg.source = Path(path)
    cfg.given = frozenset(k for k, v in data.items() if v is not None)
    if data.get('max_disp') is not None:
        md = int(data['max_disp'])
        if md <= 0 or md % 4:
            raise ModelContractError(
                f'{path}: max_disp must be a positive multiple of 4 (upstream: of 32), got {md}'
            )
        cfg.max_disp = md
    if data.get('cv_group') is not None:
        cfg.cv_group = int(data['cv_group'])
    if data.get('normalize') is not None:
        cfg.normalize = _as_bool(data['normalize'], path)
    if data.get('valid_iters') is not None:
        cfg.valid_iters = int(data['valid_iters'])
    size = data.get('image_size')
    if isinstance(size, (list, tuple)) and len(size) == 2:
        cfg.image_size = (int(size[0]), int(size[1]))
    return cfg


def _load_yaml(text: str):
    """Return yaml.safe_load of a text that may carry python/* tags.

    Tolerates the python/* tags some training-arg dumps carry (read as plain lists/maps/str).
    """
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def _plain(loader, suffix, node):
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        return loader.construct_scalar(node)

    _Loader.add_multi_constructor('tag:yaml.org,2002:python/', _plain)
    _Loader.add_multi_constructor('!', _plain)
    # SafeLoader subclass, no object construction
    return yaml.load(text, Loader=_Loader)


def _as_bool(v, path) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ('true', 'yes', 'on', '1'):
        return True
    if s in ('false', 'no', 'off', '0'):
        return False
    raise ModelContractError(f'{path}: normalize must be true or false, got {v!r}')


# -------------------------------------------------------------------------------------------------
# contract checks


def _check_image_input(graph: GraphInfo, name: str, what: str) -> TensorSpec:
    spec = graph.input(name)
    if spec is None:
        raise ModelContractError(
            f'{graph.path}: {what} needs an input named {name!r}; the graph has inputs '
            f'{list(graph.input_names)}'
        )
    if len(spec.shape) != 4 or (isinstance(spec.shape[1], int) and spec.shape[1] != 3):
        raise ModelContractError(
            f'{graph.path}: input {name!r} must be [1,3,H,W], got {list(spec.shape)}'
        )
    if isinstance(spec.shape[0], int) and spec.shape[0] != 1:
        raise ModelContractError(
            f'{graph.path}: input {name!r} must have batch 1, got {list(spec.shape)}; '
            f're-export with batch size 1'
        )
    if spec.dtype != np.float32:
        raise ModelContractError(f'{graph.path}: input {name!r} must be float32, got {spec.dtype}')
    for axis, dim in (('H', spec.shape[2]), ('W', spec.shape[3])):
        if isinstance(dim, int) and dim % MULTIPLE:
            raise ModelContractError(
                f'{graph.path}: input {name!r} has {axis}={dim}, which is not a multiple of '
                f'{MULTIPLE}; '
                f're-export at a size whose height and width are multiples of {MULTIPLE} (e.g. '
                '448x640)'
            )
    return spec


def check_two_stage(feature: GraphInfo, post: GraphInfo, config: ModelConfig) -> None:
    """Raise ModelContractError unless feature/post graphs fit contract 1."""
    specs = [_check_image_input(feature, n, 'the feature graph') for n in FEATURE_INPUTS]
    extra = [n for n in feature.input_names if n not in FEATURE_INPUTS]
    if extra:
        raise ModelContractError(
            f'{feature.path}: unexpected feature-graph inputs {extra}; expected only left, right'
        )
    if specs[0].shape[2:] != specs[1].shape[2:]:
        raise ModelContractError(
            f'{feature.path}: left {list(specs[0].shape)} and right {list(specs[1].shape)} '
            f'inputs differ in size'
        )
    for name in GWC_SOURCES:
        if feature.output(name) is None:
            raise ModelContractError(
                f'{feature.path}: the feature graph must output {name!r} (the 1/4-resolution '
                'features the '
                f'correlation volume is built from); it outputs {list(feature.output_names)}'
            )
    gwc = post.input(GWC_INPUT)
    if gwc is None:
        raise ModelContractError(
            f'{post.path}: the post graph must take an input {GWC_INPUT!r}; it takes '
            f'{list(post.input_names)}'
        )
    if len(gwc.shape) != 5:
        raise ModelContractError(
            f'{post.path}: {GWC_INPUT} must be [1,G,D,H/4,W/4], got {list(gwc.shape)}'
        )
    if gwc.dtype not in (np.float16, np.float32):
        raise ModelContractError(
            f'{post.path}: {GWC_INPUT} must be float16 or float32, got {gwc.dtype}'
        )
    unknown = [n for n in post.input_names if n != GWC_INPUT and feature.output(n) is None]
    if unknown:
        raise ModelContractError(
            f'{post.path}: post-graph inputs {unknown} are not produced by {feature.path.name} '
            '(outputs '
            f'{list(feature.output_names)}); the two files do not belong to the same export'
        )
    if post.output(POST_OUTPUT) is None and len(
        [n for n in post.output_names if n != CONFIDENCE_OUTPUT]
    ) != 1:
        raise ModelContractError(
            f'{post.path}: the post graph must output {POST_OUTPUT!r} [1,1,H,W]; it outputs '
            f'{list(post.output_names)}'
        )
    # Channels and the volume's G/D against the features and the yaml.
    lf = feature.output(GWC_SOURCES[0]).shape
    g_graph, d_graph = gwc.shape[1], gwc.shape[2]
    channels = lf[1] if len(lf) == 4 else None
    if isinstance(g_graph, int) and 'cv_group' in config.given and config.cv_group != g_graph:
        raise ModelContractError(
            f'{config.source}: cv_group {config.cv_group} disagrees with {post.path.name} '
            f'({GWC_INPUT} has {g_graph} groups); the yaml belongs to another export'
        )
    groups = g_graph if isinstance(g_graph, int) else config.cv_group
    if isinstance(channels, int) and channels % groups:
        raise ModelContractError(
            f'{feature.path}: {channels} feature channels cannot be split into {groups} '
            f'groups; set cv_group in {YAML_FILE} to a divisor of {channels}'
        )
    if (
        isinstance(d_graph, int)
        and config.max_disp is not None
        and config.max_disp // 4 != d_graph
    ):
        raise ModelContractError(
            f'{config.source}: max_disp {config.max_disp} means D={config.max_disp // 4}, but '
            f'{post.path.name} '
            f'expects D={d_graph}; the yaml belongs to another export (or re-export with '
            f'max_disp={4 * d_graph})'
        )
    if not isinstance(d_graph, int) and config.max_disp is None:
        raise ModelContractError(
            f'{post.path}: the disparity axis of {GWC_INPUT} is symbolic and no max_disp is '
            f'known; add "max_disp: 192" (or the exported value) to {YAML_FILE}'
        )
    fh, fw = specs[0].shape[2], specs[0].shape[3]
    gh, gw = gwc.shape[3], gwc.shape[4]
    if isinstance(fh, int) and isinstance(gh, int) and (fh // 4, fw // 4) != (gh, gw):
        raise ModelContractError(
            f'{post.path}: {GWC_INPUT} is {gh}x{gw} but the feature graph runs at {fh}x{fw} '
            f'(expected {fh // 4}x{fw // 4}); the two files come from different exports'
        )


def check_single(graph: GraphInfo) -> None:
    """Raise ModelContractError unless `graph` fits contract 2.

    Contract 2: left_image/right_image -> disparity.
    """
    for n in SINGLE_INPUTS:
        _check_image_input(graph, n, 'a single-engine model')
    extra = [n for n in graph.input_names if n not in SINGLE_INPUTS]
    if extra:
        raise ModelContractError(
            f'{graph.path}: unexpected inputs {extra}; a single-engine model takes only '
            f'left_image and right_image'
        )
    if graph.output(SINGLE_OUTPUT) is None:
        raise ModelContractError(
            f'{graph.path}: a single-engine model must output {SINGLE_OUTPUT!r}; it outputs '
            f'{list(graph.output_names)}'
        )


# -------------------------------------------------------------------------------------------------
# detection


def _engines_for(onnx_paths: dict) -> dict:
    out = {}
    for role, p in onnx_paths.items():
        for suf in ENGINE_SUFFIXES:
            cand = Path(p).with_suffix(suf)
            if cand.is_file():
                out[role] = cand
                break
    return out


def _two_stage(directory: Path, named: Path) -> ModelSource:
    feature_p, post_p = directory / FEATURE_FILE, directory / POST_FILE
    for p, other in ((feature_p, post_p), (post_p, feature_p)):
        if not p.is_file():
            raise ModelContractError(
                f'{named}: found {other.name} but not {p.name} in {directory}; the two-stage '
                f'export needs both {FEATURE_FILE} and {POST_FILE}'
            )
    config = read_config(directory / YAML_FILE)
    feature, post = read_graph(feature_p), read_graph(post_p)
    check_two_stage(feature, post, config)
    ckpt = _checkpoint_in(directory)
    src = ModelSource('two_stage', named, config, feature=feature, post=post, checkpoint=ckpt)
    src.engines = _engines_for({'feature': feature_p, 'post': post_p})
    return src


def _checkpoint_in(directory: Path) -> Path | None:
    cands = sorted(
        p for p in directory.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.is_file()
    )
    return cands[0] if cands else None


def _single(path: Path, named: Path) -> ModelSource:
    graph = read_graph(path)
    if graph.input(FEATURE_INPUTS[0]) is not None and any(
        n.startswith('features_') for n in graph.output_names
    ):
        raise ModelContractError(
            f'{path} is the feature stage of a two-stage export; name it {FEATURE_FILE} and '
            f'put {POST_FILE} (+ {YAML_FILE}) beside it, then pass the directory'
        )
    if graph.input(GWC_INPUT) is not None:
        raise ModelContractError(
            f'{path} is the post stage of a two-stage export; name it {POST_FILE} and put '
            f'{FEATURE_FILE} (+ {YAML_FILE}) beside it, then pass the directory'
        )
    if PLUGIN_OP in graph.op_types:
        return _plugin(path, named, graph)
    if graph.input(SINGLE_INPUTS[0]) is None:
        raise ModelContractError(
            f'{path} does not fit any supported model contract (inputs '
            f'{list(graph.input_names)}, outputs {list(graph.output_names)}); expected '
            f'{EXPECTED_LAYOUTS}'
        )
    check_single(graph)
    yaml_p = path.parent / YAML_FILE
    src = ModelSource(
        'single', named, read_config(yaml_p if yaml_p.is_file() else None), single=graph
    )
    src.engines = _engines_for({'single': path})
    return src


def _plugin(path: Path, named: Path, graph: GraphInfo) -> ModelSource:
    """Describe the plugin single-engine export.

    Inputs left/right (0..255 RGB) -> disp, volume by the FFSGWCVolume op.
    """
    for n in FEATURE_INPUTS:
        _check_image_input(graph, n, f'the {PLUGIN_OP} plugin export')
    if graph.output(POST_OUTPUT) is None:
        raise ModelContractError(
            f'{path}: the {PLUGIN_OP} plugin export must output {POST_OUTPUT!r}; it outputs '
            f'{list(graph.output_names)}'
        )
    yaml_p = path.parent / YAML_FILE
    src = ModelSource(
        'plugin', named, read_config(yaml_p if yaml_p.is_file() else None), single=graph
    )
    src.engines = _engines_for({'single': path})
    return src


def detect_model(path) -> ModelSource:
    """Recognise the model at `path`.

    `path` is a directory, an .onnx, a .pt/.pth, or an engine next to its ONNX.
    """
    if path is None:
        raise ModelContractError('no model given')
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelContractError(f'model path {path} does not exist; expected {EXPECTED_LAYOUTS}')
    if path.is_dir():
        if (path / FEATURE_FILE).is_file() or (path / POST_FILE).is_file():
            return _two_stage(path, path)
        onnx_files = sorted(path.glob('*.onnx'))
        if len(onnx_files) == 1:
            src = _single(onnx_files[0], path)
            src.checkpoint = _checkpoint_in(path)
            return src
        ckpt = _checkpoint_in(path)
        if ckpt is not None and not onnx_files:
            return ModelSource('torch', path, checkpoint=ckpt)
        found = ', '.join(sorted(p.name for p in path.iterdir())[:12]) or 'nothing'
        raise ModelContractError(
            f'{path}: cannot tell which model to use (found: {found}); expected {EXPECTED_LAYOUTS}'
        )
    suffix = path.suffix.lower()
    if suffix == '.onnx':
        if path.name in (FEATURE_FILE, POST_FILE):
            return _two_stage(path.parent, path)
        return _single(path, path)
    if suffix in CHECKPOINT_SUFFIXES:
        return ModelSource('torch', path, checkpoint=path)
    if suffix in ENGINE_SUFFIXES:
        onnx_p = path.with_suffix('.onnx')
        if not onnx_p.is_file():
            raise ModelContractError(
                f'{path}: a prebuilt TensorRT engine is used together with its ONNX (for names, '
                'shapes and the '
                f'contract checks), but {onnx_p.name} is not beside it; copy the ONNX next to '
                'the engine'
            )
        src = detect_model(onnx_p)
        role = {'feature_runner': 'feature', 'post_runner': 'post'}.get(path.stem, 'single')
        src.engines[role] = path
        return src
    raise ModelContractError(
        f'{path}: unsupported model file type {suffix or "(none)"}; expected {EXPECTED_LAYOUTS}'
    )
