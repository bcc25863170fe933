"""Supply dialects: one YAML file per instrument family, written from its programming manual."""
