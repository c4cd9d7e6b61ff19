"""open_r1_nb: open-r1's SFT distillation step, one module per workflow step.

Notebooks under ``notebooks/`` call these modules; the modules hold the logic and the tests cover it.
"""

__version__ = "0.1.0"
