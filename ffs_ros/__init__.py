"""ffs_ros: Fast-FoundationStereo disparity, depth and point clouds for ROS 2.

Data path, one responsibility per module:
  convert    ROS Image/CameraInfo <-> numpy (zero-copy, honours step)
  geometry   disparity -> depth -> points (pure numpy)
  inference  StereoMatcher backends behind load_matcher()
  model      our own FFS-family network: layers, training, export
  node       ROS wiring only (params, sync, worker, publishers, diagnostics)
  cli        the `ffs-ros` tools
"""

__version__ = '0.1.0'
