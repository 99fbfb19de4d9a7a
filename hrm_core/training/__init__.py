"""Training the HRM trader: data windows, the trading loss, curriculum trainer, checkpoints."""
