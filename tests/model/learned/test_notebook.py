"""The notebook runs top to bottom (so it never rots) and is committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from vram_ml.model.learned.training_set import load_training_set

NOTEBOOK = Path(__file__).parents[3] / "notebooks" / "learned_vs_analytical.ipynb"


def test_committed_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


def test_runs_and_says_first_when_the_data_is_synthetic():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    try:
        client.execute()
    except Exception as error:  # noqa: BLE001 - show the failing cell's error in one line
        pytest.fail(f"notebook failed: {str(error)[-2000:]}")
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    text = "".join(output.get("text", "") for output in first.outputs)
    data_dir = NOTEBOOK.parents[1] / "datasets"
    real = data_dir.exists() and load_training_set([data_dir])[0].ok.any()
    if not real:
        assert "SYNTHETIC DATA" in text and "MADE UP" in text
    assert "samples:" in text
    images = [
        o
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 3
