"""Builds bench/data/debian_sections/{train,test}.csv: a third, class-imbalanced text-classification set.

Texts are the one-line descriptions of Debian 12 (bookworm, main, amd64) packages, labelled with the package's
archive section, for 18 sections that name a subject (games, sound, science, mail, ...; not "libs", "devel",
"python"). Packages whose description only repeats another's (documentation, debug symbols, data or
transitional packages, exact duplicates) are left out. 40% of every section is kept (at least 20 texts), so the
natural imbalance stays: science 645 texts, news 20 (32:1). Split 70/30 per section into train and test.
Section names are turned into label names a person would type (hamradio -> amateur_radio, vcs -> version_control).

    python3 bench/data/build_debian_sections.py [Packages file]

The Packages file is the one apt downloads (`apt-get update`; /var/lib/apt/lists/*bookworm_main_binary-amd64_Packages.lz4,
decompressed with `lz4 -dc`). Written once; the CSVs in the repository are what the benches read.
"""
from __future__ import annotations

import csv
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parent / "debian_sections"
LISTS = Path("/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4")
SECTIONS = {
    "games": "games", "sound": "sound", "graphics": "graphics", "fonts": "fonts", "science": "science",
    "math": "math", "mail": "mail", "editors": "editors", "database": "database", "video": "video",
    "electronics": "electronics", "hamradio": "amateur_radio", "vcs": "version_control", "tex": "TeX",
    "shells": "shells", "news": "news", "education": "education", "localization": "localization",
}
SKIP = re.compile(r"debug symbols|documentation|-dbg$|-doc$|-data$|transitional|dummy package", re.IGNORECASE)
SHARE, MINIMUM, TEST_SHARE, SEED = 0.4, 20, 0.3, 0


def read_packages(path: Path | None) -> str:
    if path is not None:
        return path.read_text(encoding="utf-8")
    return subprocess.run(["lz4", "-dc", str(LISTS)], check=True, capture_output=True, text=True).stdout


def main() -> None:
    text = read_packages(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    by_label: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Section|Description):\s*(.*)$", stanza, re.MULTILINE))
        section = fields.get("Section", "").split("/")[-1]
        description = fields.get("Description", "").strip()
        if section not in SECTIONS or not description or SKIP.search(fields.get("Package", "") + " " + description):
            continue
        if description.lower() in seen:
            continue
        seen.add(description.lower())
        by_label[SECTIONS[section]].append(description)
    rng = random.Random(SEED)
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for label in sorted(by_label):
        texts = sorted(by_label[label])
        rng.shuffle(texts)
        texts = texts[:max(MINIMUM, round(SHARE * len(texts)))]
        n_test = round(TEST_SHARE * len(texts))
        splits["test"] += [(t, label) for t in texts[:n_test]]
        splits["train"] += [(t, label) for t in texts[n_test:]]
    OUT.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        rng.shuffle(rows)
        with open(OUT / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "category"])
            writer.writerows(rows)
        print(f"{split}: {len(rows)} rows")


if __name__ == "__main__":
    main()
