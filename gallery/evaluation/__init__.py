"""`gallery eval`: every metric of a gallery with figures and a report."""

from .evaluate import Evaluation, evaluate, sample_identities
from .report import write_report

__all__ = ["Evaluation", "evaluate", "sample_identities", "write_report"]
