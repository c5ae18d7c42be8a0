"""Data: one adapter per dataset, registered by adapter name (lazily, with its torch-free options).

The batch contract lives in :mod:`mmbench.data.batch`, the adapter interface in
:mod:`mmbench.data.base`.
"""

from ..registry import DATASETS
from . import options as _o
from . import suite_options as _suite  # noqa: F401  (registers the structured synthetic suite's adapters)

DATASETS.lazy("synthetic", "mmbench.data.synthetic:SyntheticDataset", _o.SyntheticOptions)
DATASETS.lazy("csv", "mmbench.data.csv:CSVDataset", _o.CSVOptions)
DATASETS.lazy("dvm", "mmbench.data.dvm:DVMDataset", _o.DVMOptions)
DATASETS.lazy("mimic", "mmbench.data.mimic:MIMICDataset", _o.MIMICOptions)
DATASETS.lazy("adni", "mmbench.data.adni:ADNIDataset", _o.ADNIOptions)
DATASETS.lazy("pad_ufes", "mmbench.data.pad_ufes:PADUFESDataset", _o.PADUFESOptions)
