"""Training our networks: everything that is not the network itself.

* :mod:`.data` -- cached generated scenes and random crops over them;
* :mod:`.train` -- the resumable training loop: losses, distillation from a teacher checkpoint,
  freezing, one-cycle schedules;
* :mod:`.evaluate` -- accuracy against ground truth (EPE, bad-1/2, D1) beside SGBM, and the
  sparsification of confidences.

The network, its checkpoint I/O and its export live in :mod:`ffs_ros.model`; this package sits
above it (it imports the model, never the other way round).
"""
