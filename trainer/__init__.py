"""Train, evaluate, calibrate, export and push the emotion models: `python -m trainer --help`."""
