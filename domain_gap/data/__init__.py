"""Data layer: storage (local / gs://), native-layout indexes, loading and resizing.

Knows nothing of models, analysis or code_loader.
"""

from domain_gap.data.dataset import DomainDataset, LoadedSample, PreparedSample
from domain_gap.data.errors import DataError
from domain_gap.data.records import SampleRecord
from domain_gap.data.storage import open_storage
from domain_gap.data.transforms import resize_pair

__all__ = [
    "DataError",
    "DomainDataset",
    "LoadedSample",
    "PreparedSample",
    "SampleRecord",
    "open_storage",
    "resize_pair",
]
