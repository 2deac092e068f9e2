"""Confusion matrix, as an `evaluate` metric loaded from this folder (the Hub's copy is unreachable offline)."""
import datasets
import evaluate
from sklearn.metrics import confusion_matrix

_DESCRIPTION = "Confusion matrix computed with scikit-learn's `confusion_matrix`."
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int, optional): the classes, in row/column order.
Returns:
    confusion_matrix (list of list of int): rows are true classes, columns predictions
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class ConfusionMatrix(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, sample_weight=None):
        cm = confusion_matrix(references, predictions, labels=labels, sample_weight=sample_weight)
        return {"confusion_matrix": cm.tolist()}
