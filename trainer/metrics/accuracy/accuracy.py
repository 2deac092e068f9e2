"""Accuracy, as an `evaluate` metric loaded from this folder (the Hub's copy is unreachable offline)."""
import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = "Accuracy computed with scikit-learn's `accuracy_score`."
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    sample_weight (list of float, optional): weight of each example.
Returns:
    accuracy (float)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, sample_weight=None):
        return {"accuracy": float(accuracy_score(references, predictions, sample_weight=sample_weight))}
