"""The export recipes (one YAML per model), shipped inside the wheel as `edge_ad.recipes`."""
