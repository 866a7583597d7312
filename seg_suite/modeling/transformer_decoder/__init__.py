"""Part of seg_suite.modeling; see the package docstring."""
