"""Classification report (accuracy, macro-F1, per-class precision/recall/F1, confusion matrix) as an `evaluate`
metric loaded from this folder: the Hub's metric scripts are unreachable offline, and one script computing the whole
report keeps the predictions in one pass."""
import datasets
import evaluate
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

_DESCRIPTION = "Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix, with scikit-learn."
_KWARGS = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int, optional): the classes, in the order of the per-class lists and the matrix.
    per_class (bool): also return per-class scores and the confusion matrix (default True).
Returns:
    accuracy (float), macro_f1 (float); with per_class: precision, recall, f1, support (lists, one per class)
    and confusion_matrix (rows are true classes, columns predictions).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references, labels=None, per_class=True):
        out = {"accuracy": float(accuracy_score(references, predictions)),
               "macro_f1": float(f1_score(references, predictions, labels=labels, average="macro", zero_division=0))}
        if per_class:
            p, r, f, s = precision_recall_fscore_support(references, predictions, labels=labels, zero_division=0)
            out.update(precision=p.tolist(), recall=r.tolist(), f1=f.tolist(), support=s.tolist(),
                       confusion_matrix=confusion_matrix(references, predictions, labels=labels).tolist())
        return out
