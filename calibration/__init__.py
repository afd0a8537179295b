"""The INT8 calibration manifests (one YAML per model), shipped inside the wheel as `edge_ad.calibration_manifests`."""
