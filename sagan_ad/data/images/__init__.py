"""What is done to decoded images: intensity normalisation, augmentation, the built-in phantoms and
lesions, boxes."""
