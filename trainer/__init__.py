"""snrlab trainer: noise schedules, SNR weightings, the diffusion loss, UNet presets, datasets,
and the Ray Train loop with resumable checkpoints. Everything but `trainer.run` is plain PyTorch."""
