"""MedVL training: accelerate-launched scripts, shared loop pieces, metrics and the `medvl` CLI."""
