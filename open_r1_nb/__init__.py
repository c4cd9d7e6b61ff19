"""open_r1_nb: open-r1's SFT distillation step, one module per workflow step.

Notebooks under ``notebooks/`` call these modules; the modules hold the logic and the tests cover it.
"""

from open_r1_nb import progress as _progress

__version__ = "0.1.0"

# Before transformers, datasets and huggingface_hub are imported: their progress bars become widgets in JupyterLab
# and stay plain text under papermill (a no-op outside a notebook kernel).
_progress.setup()
