"""The LightningDataModules and the torch datasets they serve."""
