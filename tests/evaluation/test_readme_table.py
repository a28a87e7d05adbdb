"""The README results table regenerated from evaluation output, between its markers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from transtic.evaluation.readme_table import (
    END,
    START,
    MarkerError,
    main,
    replace_between_markers,
    results_table,
)


def _point(method: str, name: str, bpp: float, payload: float, psnr: float, top1: float) -> Any:
    return {"method": method, "point": name, "bpp": bpp, "bpp_payload": payload, "psnr": psnr,
            "scores": {"top1_agreement": top1}}  # fmt: skip


RESULT: dict[str, Any] = {
    "task": "classification",
    "protocol": "paper",
    "num_images": 120,
    "primary_metric": "top1_agreement",
    "reference": {"top1_agreement": 100.0},
    "command": "transtic eval --task classification --protocol paper",
    "points": [
        _point("transtic", "cls_q3", 0.5, 0.49, 24.0, 80.0),
        _point("transtic", "cls_q1", 0.2, 0.19, 22.0, 60.0),
        _point("jpeg", "q10", 0.25, 0.25, 25.0, 50.0),
        _point("jpeg", "q30", 0.55, 0.55, 28.0, 75.0),
    ],
}


def test_table_rows_follow_rate_order_and_carry_both_rates() -> None:
    table = results_table(RESULT)
    row = next(line for line in table.splitlines() if line.startswith("| transtic"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "transtic", "cls_q1 / cls_q3", "0.200 / 0.500", "0.190 / 0.490", "22.00 / 24.00",
        "60.0 / 80.0",
    ]  # fmt: skip
    assert "protocol `paper`" in table and "top-1 agreement %" in table
    assert "transtic vs jpeg" in table and RESULT["command"] in table


def test_replaces_only_the_text_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nintro\n", "\n\n## Next\ntail\n"
    readme.write_text(f"{before}{START}\nold table\n{END}{after}")
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULT))
    assert main([str(results), "--readme", str(readme), "--check"]) == 1
    assert main([str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(before + START + "\n") and text.endswith(END + after)
    assert "old table" not in text and results_table(RESULT) in text
    assert main([str(results), "--readme", str(readme), "--check"]) == 0
    assert main([str(results), "--readme", str(readme)]) == 0 and readme.read_text() == text


@pytest.mark.parametrize(
    "text", ["no markers", f"{END} x {START}", f"{START} a {END} {START} b {END}"]
)
def test_bad_markers_are_refused(text: str, tmp_path: Path) -> None:
    with pytest.raises(MarkerError):
        replace_between_markers(text, "table")
    readme = tmp_path / "README.md"
    readme.write_text(text)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(RESULT))
    assert main([str(results), "--readme", str(readme)]) == 2
    assert readme.read_text() == text
