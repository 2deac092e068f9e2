"""Recall, as an `evaluate` metric loaded from this folder (the Hub's copy is unreachable offline)."""
import datasets
import evaluate
from sklearn.metrics import recall_score

_DESCRIPTION = "Recall computed with scikit-learn's `recall_score`."
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int, optional): the classes to score.
    average (str or None): 'macro', 'micro', 'weighted', 'binary' or None for one score per class.
Returns:
    recall (float, or list of float when average is None)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Recall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, average="macro", sample_weight=None):
        score = recall_score(references, predictions, labels=labels, average=average, sample_weight=sample_weight,
                             zero_division=0)
        return {"recall": score.tolist() if average is None else float(score)}
