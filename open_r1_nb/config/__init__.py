"""Step 1, configuration: read a profile (one flat YAML recipe), validate it and turn it into typed arguments.

Where things are: ``loading`` (``load_recipe``) over ``schema`` (the dataclasses), ``mixture``, ``recipe``, ``checks``,
``defaults`` (keys the loader fills in), ``files`` (accelerate configs, templates), ``keys``, ``coerce``, ``errors``.

A profile ``parameters/<profile>.yaml`` is an open-r1 recipe: the same keys as open-r1's ``recipes/*/sft/*.yaml``
(model arguments, script arguments, SFT config) plus a few pipeline keys (``accelerate_config``,
``num_processes``, ``assets``). :func:`load_recipe` splits it into four dataclasses and checks everything that can
be checked before anything heavy starts, raising :class:`RecipeError` with a message that names the key, the value
and the fix. Keys that trl 1.16 / transformers 5 renamed or removed are mapped (or dropped) with a note in
``recipe.notes`` (``keys``), so upstream recipes still load. ``SFTConfig`` defers its hardware checks and device
setup while a recipe is validated (see ``schema``).
"""

from trl import ModelConfig

from open_r1_nb.config.checks import local_model_depth
from open_r1_nb.config.defaults import default_accelerate_config, gpu_count
from open_r1_nb.config.errors import RecipeError
from open_r1_nb.config.files import (
    ACCELERATE_DIR,
    CHATML_TEMPLATE,
    accelerate_config_path,
    available_accelerate_configs,
    available_profiles,
    local_path,
    read_accelerate_config,
    resolve_chat_template,
)
from open_r1_nb.config.keys import DROPPED_KEYS, RENAMED_KEYS
from open_r1_nb.config.loading import load_recipe, parse_overrides
from open_r1_nb.config.mixture import DatasetConfig, DatasetMixtureConfig
from open_r1_nb.config.recipe import Recipe, plain_value, save_recipe
from open_r1_nb.config.schema import ASSET_NAMES, PipelineArguments, ScriptArguments, SFTConfig
from open_r1_nb.hardware import cpu_supports_bf16

__all__ = [
    "ACCELERATE_DIR",
    "ASSET_NAMES",
    "CHATML_TEMPLATE",
    "DROPPED_KEYS",
    "RENAMED_KEYS",
    "DatasetConfig",
    "DatasetMixtureConfig",
    "ModelConfig",
    "PipelineArguments",
    "Recipe",
    "RecipeError",
    "SFTConfig",
    "ScriptArguments",
    "accelerate_config_path",
    "available_accelerate_configs",
    "available_profiles",
    "cpu_supports_bf16",
    "default_accelerate_config",
    "gpu_count",
    "load_recipe",
    "local_model_depth",
    "local_path",
    "parse_overrides",
    "plain_value",
    "read_accelerate_config",
    "resolve_chat_template",
    "save_recipe",
]
