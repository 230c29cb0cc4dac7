"""Files to uint8 pixels: formats, DICOM, bit depth, discovery of image files, the decode settings
and the CSV tables of releases."""
