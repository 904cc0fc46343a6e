"""Release dates of the libraries whose versions decide memory rules, from PyPI's JSON API.

`python -m vram_ml.published.release_dates` rewrites datasets/published/release_dates.yaml (the
first upload time of each release, final releases only). The mapping reads that file, never the
network: a row whose source pins no exact version takes the newest release published before the
source's commit that the source's stated range allows (mapping_versions.py), and says so.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from functools import cache
from pathlib import Path

import yaml

from vram_ml.published.mapping_common import VERSION_FIELDS

RELEASE_DATES = Path(__file__).parents[2] / "datasets" / "published" / "release_dates.yaml"
PYPI = "https://pypi.org/pypi/{name}/json"


def fetch(name: str) -> dict[str, str]:
    """{version: first upload date (ISO, UTC)} of every final release of `name` on PyPI."""
    with urllib.request.urlopen(PYPI.format(name=name), timeout=60) as response:  # noqa: S310
        releases = json.load(response)["releases"]
    dates = {}
    for version, files in releases.items():
        if files and all(part.isdigit() for part in version.split(".")):
            dates[version] = min(file["upload_time_iso_8601"] for file in files)
    return dict(sorted(dates.items(), key=lambda item: item[1]))


@cache
def release_dates() -> dict[str, dict[str, str]]:
    """library -> {version: date}, as committed."""
    if not RELEASE_DATES.is_file():
        return {}
    return yaml.safe_load(RELEASE_DATES.read_text())["libraries"]


def main() -> None:
    libraries = {library: fetch(library) for library in VERSION_FIELDS}
    text = yaml.safe_dump({"source": "PyPI JSON API (https://pypi.org/pypi/NAME/json): first "
                                     "upload time of each final release",
                           "libraries": libraries}, sort_keys=False)
    RELEASE_DATES.write_text(text)
    print(f"{RELEASE_DATES}: {sum(len(v) for v in libraries.values())} releases", file=sys.stderr)


if __name__ == "__main__":
    main()
