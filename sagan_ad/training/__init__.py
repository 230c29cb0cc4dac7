"""The training infrastructure around `sagan_ad.SAGAN`: losses, optimizers, the divergence
guard, callbacks, checkpoints and resume, run folders, output files and experiment tracking."""
