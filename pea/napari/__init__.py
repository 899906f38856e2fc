"""The napari plugin of `pea` (extra `pea[napari]`; manifest `napari.yaml`): a widget that
segments the selected image layer with a checkpoint in a background thread (`widget`), a
reader for `pea predict` outputs (`reader`), and look-alike sample data (`samples`)."""
