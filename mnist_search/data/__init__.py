"""The data layer: known datasets, verified IDX files, tensors, fetch sources, test data.

Submodules: idx (registry, headers, SHA-256), tensors (load once as tensors), fetch (sources,
imported on its own), synthetic (tiny learnable datasets for tests). Nothing here imports
torch until data is loaded.
"""

from __future__ import annotations

from ..errors import DataError
from .idx import (
    DATASETS,
    FILES,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    DatasetInfo,
    combined_digest,
    dataset_info,
    default_root,
    is_custom,
    raw_dir,
    sha256_file,
    verify,
)
from .tensors import Data, RawData, Split, clear_cache, epoch_order, load_data, load_raw

__all__ = ["DATASETS", "FILES", "IMAGE_MAGIC", "LABEL_MAGIC", "Data", "DataError", "DatasetInfo",
           "RawData", "Split", "clear_cache", "combined_digest", "dataset_info", "default_root",
           "epoch_order", "is_custom", "load_data", "load_raw", "raw_dir", "sha256_file",
           "verify"]
