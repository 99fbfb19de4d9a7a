"""Supervised training of a trader: the trading loss, the curriculum trainer with selection and the
tilt gate, distributed data parallel, evaluation rollouts and EWC's Fisher on old data."""
