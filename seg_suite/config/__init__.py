"""Every config key seg_suite adds to detectron2's ``get_cfg()``, and how a config file is read.

- :mod:`~seg_suite.config.mask2former`: the official Mask2Former keys with their published
  defaults, plus seg_suite's model keys (``add_seg_suite_config``);
- :mod:`~seg_suite.config.training`: data and training keys (``add_training_config``);
- :mod:`~seg_suite.config.loading`: config files and ``KEY VALUE`` overrides read as data
  (``merge_config_file``, ``merge_overrides``);
- :mod:`~seg_suite.config.checks`: values that cannot train (``VALUE_RULES``, ``check_config``).

Imports detectron2.
"""

from seg_suite.config.checks import VALUE_RULES, check_config
from seg_suite.config.loading import merge_config_file, merge_overrides
from seg_suite.config.mask2former import add_deeplab_keys, add_seg_suite_config
from seg_suite.config.training import add_training_config

__all__ = ["VALUE_RULES", "add_deeplab_keys", "add_seg_suite_config", "add_training_config", "check_config",
           "merge_config_file", "merge_overrides"]
