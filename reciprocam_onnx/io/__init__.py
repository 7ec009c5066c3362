"""Files in and out: atomic writes, images, overlays, class-name files, progress bars."""
