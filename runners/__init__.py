"""The jobs and their I/O: config loading, datasets, sampling to files, FID and statistics, ablations, training,
torch.distributed helpers. ``main.py`` is the command-line front end."""
