"""Training and adapting embedders: margin losses, miners, class-disjoint splits, the loop and export.

>>> from gallery.train import ArcFaceLoss, fit
>>> loss = ArcFaceLoss(num_classes, dim=64, s=30.0, m=0.5)     # doctest: +SKIP
>>> result = fit(model, loss, (x, y), (x_val, y_val))          # doctest: +SKIP
"""

from .data import LabelledData, Split, class_split, encode_labels, load_labelled_vectors, pk_batches, shuffled_batches
from .export import NormalizedEncoder, export_encoder, load_encoder, read_encoder_metadata
from .losses import (
    ArcFaceLoss,
    CombinedMarginLoss,
    ContrastiveLoss,
    CosFaceLoss,
    MarginSoftmaxLoss,
    NormSoftmaxLoss,
    SoftmaxLoss,
    SphereFaceLoss,
    TripletLoss,
    sphereface_psi,
)
from .loop import LOSSES, METRICS, MODES, TrainResult, embed, evaluate, fit, make_loss, seed_everything, train_encoder
from .mining import MINING, Pairs, Triplets, cosine_distances, mine_pairs, mine_triplets
from .models import DigitsCNN, ProjectionHead

__all__ = [
    "ArcFaceLoss",
    "CombinedMarginLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "DigitsCNN",
    "LOSSES",
    "LabelledData",
    "METRICS",
    "MINING",
    "MODES",
    "MarginSoftmaxLoss",
    "NormSoftmaxLoss",
    "NormalizedEncoder",
    "Pairs",
    "ProjectionHead",
    "SoftmaxLoss",
    "SphereFaceLoss",
    "Split",
    "TrainResult",
    "TripletLoss",
    "Triplets",
    "class_split",
    "cosine_distances",
    "embed",
    "encode_labels",
    "evaluate",
    "export_encoder",
    "fit",
    "load_encoder",
    "load_labelled_vectors",
    "make_loss",
    "mine_pairs",
    "mine_triplets",
    "pk_batches",
    "read_encoder_metadata",
    "seed_everything",
    "shuffled_batches",
    "sphereface_psi",
    "train_encoder",
]
