"""The README's supported-models table is the one generated from the tested catalogue."""

from __future__ import annotations

from pathlib import Path

from tests import estimator_catalogue as catalogue

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_table_is_generated_from_the_catalogue() -> None:
    text = README.read_text(encoding="utf-8")
    assert catalogue.readme_table(text) == catalogue.table(), (
        "README.md's supported-models table differs from tests/estimator_catalogue.py: "
        "run python -m tests.estimator_catalogue --write README.md"
    )
    assert catalogue.main(["--check", str(README)]) == 0


def test_a_table_claiming_an_untested_family_fails_the_check(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    fewer = catalogue.table(catalogue.CATALOGUE[:-1])  # one configuration less tested
    stale = tmp_path / "README.md"
    stale.write_text(text.replace(catalogue.table(), fewer), encoding="utf-8")
    assert catalogue.main(["--check", str(stale)]) == 1
    assert catalogue.main(["--write", str(stale)]) == 0
    assert catalogue.main(["--check", str(stale)]) == 0


def test_the_table_counts_every_family_and_the_retrained_subset() -> None:
    rows = [
        line.split(" | ")
        for line in catalogue.table().splitlines()
        if line.startswith("| ") and not line.startswith("| family")
    ]
    assert sum(int(r[2]) for r in rows) == len(catalogue.CATALOGUE) >= 60
    assert sum(int(r[3]) for r in rows) == sum(e.retrain for e in catalogue.CATALOGUE) >= 10
    families = {r[0].strip("| ") for r in rows}
    assert {"outlier detectors", "categorical columns", "voting and stacking"} <= families
