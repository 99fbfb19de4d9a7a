"""The floor every layer stands on: config, errors, the vocabularies (actions, features),
statistics, weights-only checkpoints and the EWC penalty. Imports nothing else of hrm_core."""
