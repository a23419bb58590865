"""examples/tour.ipynb is committed without outputs and runs top to bottom (nbclient, a fresh
kernel of this Python, cwd = the repository root so that this checkout's initwise is imported)."""
import os
import time


import nbclient  # noqa: E402 - in the test extra (with ipykernel)
import nbformat  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "tour.ipynb")


def test_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_tour_runs(capsys):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    start = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": ROOT}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    seconds = time.perf_counter() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # the histogram, the diagnose plot, the training curves
    text = "".join(o.get("text", "") for o in outputs)
    assert "vanish" in text and "healthy" in text  # torch's default vs initwise.init on the deep net
    assert "initwise plan: policy 'standard'" in text  # plan.table() returns the table in Jupyter too
    with capsys.disabled():
        print(f"\n[examples/tour.ipynb ran in {seconds:.0f} s]")
