"""The networks, their losses and regularisers, the training step and loop."""
