"""The typed config of a run: its fields and their rules (``sections``), presets (``presets``), how it
is layered (``layers``) and its id (``ids``). The names below are the package's public API."""

from atssrepro.config.ids import IdOmitted, IdOmittedAtDefault, config_id, to_dict
from atssrepro.config.layers import (
    BUILTIN_CONFIG_DIR,
    Layer,
    apply,
    build_config,
    builtin_configs,
    config_file,
    from_dict,
    parse_override,
    resolve_config_source,
    to_toml,
    with_data_root,
)
from atssrepro.config.presets import (
    DEMO,
    PAPER,
    PRESETS,
    SMOKE,
    Preset,
    as_preset,
    is_comparable,
    preset_file,
    preset_named,
)
from atssrepro.config.sections import (
    PREDICTION_AWARE,
    AnchorConfig,
    AssignConfig,
    BackboneConfig,
    Config,
    DataConfig,
    DslConfig,
    EvalConfig,
    HeadConfig,
    InferenceConfig,
    LossConfig,
    ModelConfig,
    OtaConfig,
    PaaConfig,
    SimOtaConfig,
    TalConfig,
    TrainConfig,
    batch_split_problem,
    check_consistency,
    config_fields,
    data_path,
    rule_of,
)
from atssrepro.tomlfile import load_toml, load_toml_text

__all__ = [
    "BUILTIN_CONFIG_DIR", "DEMO", "PAPER", "PRESETS", "SMOKE", "AnchorConfig", "AssignConfig", "BackboneConfig",
    "Config", "DataConfig", "EvalConfig", "HeadConfig", "IdOmitted", "IdOmittedAtDefault", "InferenceConfig", "Layer",
    "LossConfig", "ModelConfig", "Preset", "TrainConfig", "apply", "as_preset", "batch_split_problem",
    "build_config", "builtin_configs", "check_consistency", "config_fields", "config_file", "config_id",
    "data_path", "from_dict", "is_comparable", "load_toml", "load_toml_text", "parse_override", "preset_file",
    "preset_named", "resolve_config_source", "rule_of", "to_dict", "to_toml", "with_data_root",
    "PREDICTION_AWARE", "DslConfig", "OtaConfig", "PaaConfig", "SimOtaConfig", "TalConfig",
]  # fmt: skip
