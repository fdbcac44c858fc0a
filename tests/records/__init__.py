"""All OpInfo records: every module in this folder contributes its ``RECORDS`` list."""
import importlib
import pkgutil

RECORDS = []
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    RECORDS.extend(importlib.import_module(f"{__name__}.{_info.name}").RECORDS)
