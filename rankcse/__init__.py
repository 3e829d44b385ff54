"""rankcse: contrastive fine-tuning of sentence embeddings studied through representation rank.

The training core (methods, rank metrics, the RR penalty, SentEval-compatible evaluation and the
training loop). It never imports Ray; ``rayjobs`` runs it as Ray Tune trials.
"""

__version__ = "0.1.0"
