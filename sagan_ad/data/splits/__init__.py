"""Which image goes where: the protocol split, the Med-AD split file, patient groups and the
leakage checks."""
