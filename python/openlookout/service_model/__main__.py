"""``python -m openlookout.service_model``: prints the directory for ``AWS_DATA_PATH``."""

from . import data_path

print(data_path())
