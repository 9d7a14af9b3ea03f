"""The fine-tuned version's head: one linear model over sentence embeddings and the domain's own n-grams.

Pure numpy/scipy/scikit-learn: no Django.

The generic sentence embedding knows English but not a team's product names, plan names, error codes or
jargon; a word it has never seen is split into word pieces whose meaning is diluted in the mean-pooled
vector. This head stacks, for each text,

    [ MiniLM vector (384, L2-normalised) | w * word 1-2-gram TF-IDF | w * character 2-5-gram TF-IDF ]

with the vocabulary learned from the labeled texts, and fits a single linear SVM (liblinear, one-vs-rest)
on all of it. The n-gram columns learn exactly the vocabulary the embedding misses (character n-grams
also catch misspellings and inflections), while the embedding carries the paraphrases the n-grams miss.
Measured on Banking77 (bench/model_types.py, bench/README_fine_tuned.md) this is more accurate than
logistic regression on the vectors alone and adds well under a millisecond per 8 texts at inference, far
less than the embedding itself. A distilled static encoder was rejected there (less accurate); fine-tuning the
encoder itself helps (bench/encoder_tuning.py) but needs per-version vectors the rest of the product does not
have yet (see that README).

A second expert works on the vectors alone: logistic regression anchored on the describe-and-classify
head's log-probabilities (models_app/ml/anchored.py), which keeps what the label descriptions know where
labels are few. The two are combined log-linearly, `(1 − w) log p_svm + w log p_anchored`, with w chosen
from EXPERT_WEIGHTS by the out-of-fold log-likelihood (the same folds as the calibration), then temperature-scaled
once more. With few labels per class the anchored expert carries the head (the SVM alone was 1 point below
the active-learning head at 500 Banking77 labels); with many, the n-grams do. w = 0 is exactly the SVM.

**The text stage (a cascade).** A third linear SVM reads the n-grams alone, no vector, and is calibrated the same
way. Where it is confident enough, the head answers from it and the text is never embedded: at inference
(`predict_proba_from_texts`) only the other texts go through the sentence encoder, which is nearly all of
the cost of a prediction. "Confident enough" is a threshold chosen per training on the out-of-fold scores: the
lowest candidate at which, and at every stricter candidate, the text stage is right on at least as many of
the records it would answer as the full head is on the same records and wrong on at most 1% of them; and it
answers only texts most of whose words it knows. So the cascade gives up no measured accuracy; when no candidate qualifies (few labels per class, say) the stage is switched off. `predict_proba`
with stored vectors applies the same rule, so evaluation measures exactly what inference serves.

**Self-training on the unlabeled pool.** Below SELF_TRAINING_MAX_LABELS labels, when the caller passes unlabeled
records of the same dataset, the head is trained twice. A first pass (without the text stage) gives every
calibration fold's model and the all-labels model; each pseudo-labels the pool with the records it gives at least
PSEUDO_LABEL_CONFIDENCE (calibrated). The second pass is the head above, trained on the labels plus pseudo-labels,
where fold f's model gets only fold f's first-pass pseudo-labels and the final model the all-labels model's. So
no fold model trains on pseudo-labels derived from its own held-out records: a first version that gave every fold
the all-labels model's pseudo-labels fitted its temperatures on leaked scores (test ECE 0.032-0.036 on Banking77
at 1,000 labels). The pool teaches the n-gram SVM the words that occur beside ones the labels already know; the
vector expert keeps learning from the real labels only. If the second pass is significantly worse than the first
on the same out-of-fold records (SELF_TRAINING_DROP_P), the pseudo-labels are dropped and the plain head is trained
(bench/README_fine_tuned.md has the measurements behind each choice).

SVM scores are not probabilities, so the head is calibrated: the scores of cross-validated fits (each
record scored by a model that did not train on it) are fitted with one softmax temperature (temperature
scaling), which fixes confidence without changing any prediction.
"""
from __future__ import annotations

import time
import warnings
from itertools import chain
from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import sparse
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from models_app.ml.anchored import AnchoredExpert, fit_anchored_expert
from models_app.ml.calibration import expected_calibration_error, fit_temperature
from models_app.ml.compare import mcnemar

C = 2.0
# Weight of each TF-IDF block against the unit-length embedding; chosen on Banking77 (README_fine_tuned.md).
TEXT_FEATURE_WEIGHT = 0.5
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
# Folds of the calibration fits. Each fold model trains on (folds-1)/folds of the labels, and a model trained
# on fewer labels is less confident than the final one: with few labels that gap matters (at 500 Banking77
# labels 3 folds left ECE 0.047), so small label sets get 5 folds; large ones 3, to bound training time.
SMALL_LABEL_SET = 5000
CALIBRATION_FOLDS_SMALL, CALIBRATION_FOLDS_LARGE = 5, 3
MIN_EXAMPLES_PER_LABEL = 2
MAX_ITER = 2000
# Candidate weights of the anchored vector expert in the log-linear combination (chosen per training by the
# out-of-fold log-likelihood).
EXPERT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.9)
# The text stage: its SVM's C, the confidence thresholds tried (strictest first), and how many out-of-fold
# records a threshold must cover before its accuracy counts as evidence.
TEXT_STAGE_C = 1.0
TEXT_STAGE_THRESHOLDS = (0.99, 0.98, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.5)
TEXT_STAGE_MIN_COVERED = 30
# The stage answers only texts at least this share of whose word 1-2-grams are in its vocabulary: a text in
# words it has never seen (another subject, another language) goes to the vectors, however sure the stage's
# intercepts would make it.
TEXT_STAGE_MIN_KNOWN = 0.5
# ...and only at a threshold where it was at most this often wrong out of fold. "No worse than the full head"
# alone was not enough with few labels: the final stage, trained on every label, is surer than its fold models,
# so on new texts it answers more of them than the folds did, and on Banking77 at 500-1,000 labels that cost
# 0.2-0.7 points. Where it is 99% right it answers texts the full head also gets right.
TEXT_STAGE_MAX_ERROR = 0.01
# Self-training (see the module docstring): below this many labels, unlabeled pool records that a first-pass model
# gives at least PSEUDO_LABEL_CONFIDENCE (calibrated) join the training data with that model's label. Above it
# labels are many enough that the gain is small and the training time doubles (bench/README_fine_tuned.md).
SELF_TRAINING_MAX_LABELS = SMALL_LABEL_SET
PSEUDO_LABEL_CONFIDENCE = 0.7
# Self-training is dropped (the plain head is trained) when its second pass is significantly worse than the first
# on the same out-of-fold records: McNemar's test, one side, at this level. Where pseudo-labels mislead (a pool of
# another kind, systematic confusions) that shows. The test replaced a fixed 1-point tolerance because it weighs
# how many records the two passes disagree on: the same drop is noise when they disagree on 200 records and a
# clear loss when they disagree on 20 (bench/README_fine_tuned.md).
SELF_TRAINING_DROP_P = 0.05
# A class absent from one calibration fold's training part gets this score there: never predicted.
_ABSENT_CLASS_SCORE = -1e4


class TooFewExamples(ValueError):
    """Some labels have fewer than MIN_EXAMPLES_PER_LABEL examples: a fine-tuned version cannot learn them."""

    def __init__(self, short_classes: dict[str, int]):
        self.short_classes = dict(short_classes)
        listed = ", ".join(f"{label!r} ({count})" for label, count in self.short_classes.items())
        super().__init__(
            f"a fine-tuned version needs at least {MIN_EXAMPLES_PER_LABEL} labeled examples of every label; "
            f"too few for: {listed}"
        )


class FineTunedHead:
    """Implements the Head interface of models_app.ml.artifacts. Needs the texts as well as their vectors.

    Picklable. Right after training, `out_of_fold_proba` holds the calibrated cross-validated probabilities
    of the training records (in training order), for a cross-validation evaluation without retraining; it is
    not pickled. Their accuracy is an honest out-of-sample figure; their calibration is slightly flattering,
    since the temperature was fitted on these same scores.
    """

    def __init__(self, *, labels: list[str], word_vectorizer: TfidfVectorizer, char_vectorizer: TfidfVectorizer,
                 embedding_coef: np.ndarray, word_coef: np.ndarray, char_coef: np.ndarray, intercept: np.ndarray,
                 temperature: float, details: dict):
        self.labels = list(labels)
        self.word_vectorizer = word_vectorizer
        self.char_vectorizer = char_vectorizer
        # Coefficients stored per block, transposed (features x labels) and with the block weight folded in,
        # so scoring is three matrix products with no stacking or input checks on the inference path.
        self.embedding_coef = embedding_coef
        self.word_coef = word_coef
        self.char_coef = char_coef
        self.intercept = intercept
        self.temperature = float(temperature)
        self.details = details
        self.out_of_fold_proba: np.ndarray | None = None
        self._analyzers = None
        # The anchored vector expert and the combination (see the module docstring); heads pickled before it
        # existed have none and predict with the SVM alone.
        self.vector_expert: AnchoredExpert | None = None
        self.expert_temperature = 1.0
        self.expert_weight = 0.0
        self.combined_temperature = 1.0
        # The text stage (see the module docstring): n-gram coefficients in the blocks' layout, its intercept
        # and temperature, and the confidence at or above which it answers alone (None: switched off). Heads
        # pickled before it existed have none.
        self.text_word_coef: np.ndarray | None = None
        self.text_char_coef: np.ndarray | None = None
        self.text_intercept: np.ndarray | None = None
        self.text_temperature = 1.0
        self.text_stage_threshold: float | None = None
        self._joint_coef = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["out_of_fold_proba"] = None
        state["_analyzers"] = None  # rebuilt from the vectorizers on first use
        state["_joint_coef"] = None
        return state

    def _ngram_scores(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(the SVM's n-gram scores, the text stage's scores or None, the share of each text's word n-grams the
        vocabulary knows), from one pass over the texts' n-grams: both models' coefficients sit side by side in
        one matrix per block."""
        if self._analyzers is None:
            self._analyzers = (NgramColumns(self.word_vectorizer), NgramColumns(self.char_vectorizer))
        if getattr(self, "_joint_coef", None) is None:
            if getattr(self, "text_word_coef", None) is None:
                self._joint_coef = (self.word_coef, self.char_coef)
            else:
                self._joint_coef = (np.ascontiguousarray(np.hstack([self.word_coef, self.text_word_coef])),
                                    np.ascontiguousarray(np.hstack([self.char_coef, self.text_char_coef])))
        word_columns, char_columns = self._analyzers
        word_coef, char_coef = self._joint_coef
        rows, columns, known_share = word_columns.with_known_share(texts)
        scores = _tfidf_scores(texts, word_columns, self.word_vectorizer, word_coef, found=(rows, columns))
        scores += _tfidf_scores(texts, char_columns, self.char_vectorizer, char_coef)
        k = len(self.labels)
        if scores.shape[1] == k:
            return scores, None, known_share
        return scores[:, :k], scores[:, k:] + self.text_intercept, known_share

    def decision_scores(self, vectors: np.ndarray, texts: Sequence[str] | None) -> np.ndarray:
        """The n-gram SVM's scores (vectors and n-grams), before calibration."""
        vectors, texts = self._checked(vectors, texts)
        return self._svm_scores(vectors, self._ngram_scores(texts)[0])

    def _svm_scores(self, vectors: np.ndarray, ngram_scores: np.ndarray) -> np.ndarray:
        return (vectors @ self.embedding_coef).astype(np.float64) + ngram_scores + self.intercept

    @staticmethod
    def _checked(vectors: np.ndarray, texts: Sequence[str] | None) -> tuple[np.ndarray, Sequence[str]]:
        if texts is None:
            raise ValueError("a fine-tuned head reads the texts as well as their vectors: pass texts")
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(texts) != vectors.shape[0]:
            raise ValueError(f"{vectors.shape[0]} vectors but {len(texts)} texts")
        return vectors, texts

    def predict_proba(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        vectors, texts = self._checked(vectors, texts)
        return self._cascade(texts, lambda rows: vectors[rows])

    def predict_proba_from_texts(self, texts: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """What predict_proba gives for these texts and their vectors, embedding only the texts the text stage
        does not answer alone (models_app.ml.artifacts.predict_texts)."""
        texts = list(texts)
        return self._cascade(texts, lambda rows: embed([texts[i] for i in rows]))

    def _cascade(self, texts: Sequence[str], vectors_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        ngram_scores, text_scores, known_share = self._ngram_scores(texts)
        proba = np.empty((len(texts), len(self.labels)), dtype=np.float64)
        full_rows = np.arange(len(texts))
        threshold = getattr(self, "text_stage_threshold", None)
        if text_scores is not None and threshold is not None:
            stage = np.exp(_log_softmax(text_scores / self.text_temperature))
            confident = (stage.max(axis=1) >= threshold) & (known_share >= TEXT_STAGE_MIN_KNOWN)
            proba[confident] = stage[confident]
            full_rows = np.flatnonzero(~confident)
        if len(full_rows):
            vectors = np.asarray(vectors_of(full_rows), dtype=np.float32)
            proba[full_rows] = self._full_proba(vectors, ngram_scores[full_rows])
        return proba

    def _full_proba(self, vectors: np.ndarray, ngram_scores: np.ndarray) -> np.ndarray:
        """Both experts combined: the answer for a text the text stage leaves to the vectors."""
        svm_scores = self._svm_scores(vectors, ngram_scores)
        expert = getattr(self, "vector_expert", None)
        if expert is None or self.expert_weight == 0.0:
            return np.exp(_log_softmax(svm_scores / self.temperature))
        combined = _combine(svm_scores / self.temperature, expert.logits(vectors) / self.expert_temperature,
                            self.expert_weight)
        return np.exp(_log_softmax(combined / self.combined_temperature))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    # Plain numpy: scipy's version costs more than the arithmetic for 8 rows, and this is the inference path.
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _combine(svm_logits: np.ndarray, expert_logits: np.ndarray, weight: float) -> np.ndarray:
    return (1.0 - weight) * _log_softmax(svm_logits) + weight * _log_softmax(expert_logits)


def train_fine_tuned_head(*, labels: list[str], texts: list[str], vectors: np.ndarray, y: np.ndarray, seed: int = 0,
                          max_threads: int = 1, progress: Callable[[float], None] | None = None,
                          prior_head=None, pool_texts: Sequence[str] | None = None,
                          pool_vectors: np.ndarray | None = None) -> FineTunedHead:
    """Train on every labeled record: `texts[i]`, its vector `vectors[i]` and label index `y[i]` into `labels`.
    `prior_head` (the describe-and-classify head over the same labels, or None for a uniform prior) anchors the
    vector expert. `pool_texts`/`pool_vectors` (unlabeled records of the same dataset, never evaluation records)
    turn on self-training below SELF_TRAINING_MAX_LABELS labels (see the module docstring).

    Raises TooFewExamples when any label has fewer than 2 examples. `progress` gets fractions 0..1.
    """
    started = time.perf_counter()
    labels = list(labels)
    y = np.asarray(y, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32)
    if not labels:
        raise ValueError("labels must not be empty")
    if not (vectors.shape[0] == len(texts) == len(y)):
        raise ValueError(f"{vectors.shape[0]} vectors, {len(texts)} texts and {len(y)} labels: they must match")
    if len(y) and (y.min() < 0 or y.max() >= len(labels)):
        raise ValueError("y holds an index outside labels")
    counts = np.bincount(y, minlength=len(labels))
    short = {labels[i]: int(counts[i]) for i in range(len(labels)) if counts[i] < MIN_EXAMPLES_PER_LABEL}
    if short:
        raise TooFewExamples(short)
    if len(labels) < 2:
        raise ValueError("a classifier needs at least 2 labels")
    if prior_head is not None and list(prior_head.labels) != labels:
        raise ValueError("prior_head.labels must equal labels, in the same order")
    pool = None
    if pool_texts is not None and pool_vectors is not None and len(pool_texts) and len(y) < SELF_TRAINING_MAX_LABELS:
        pool_vectors = np.asarray(pool_vectors, dtype=np.float32)
        if pool_vectors.shape != (len(pool_texts), vectors.shape[1]):
            raise ValueError(f"{pool_vectors.shape[0]} pool vectors of width {pool_vectors.shape[1]} for "
                             f"{len(pool_texts)} pool texts and labeled vectors of width {vectors.shape[1]}")
        pool = _Pool(list(pool_texts), pool_vectors)
    report = progress or (lambda fraction: None)
    texts = list(texts)
    calibration_folds = CALIBRATION_FOLDS_SMALL if len(y) < SMALL_LABEL_SET else CALIBRATION_FOLDS_LARGE
    # Stratified folds cannot outnumber the examples of the largest label (2 examples each: 2 folds).
    calibration_folds = min(calibration_folds, int(counts.max()))
    folds = StratifiedKFold(n_splits=calibration_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Labels with only 2-3 examples cannot be in every fold; handled in _cross_validate.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(folds.split(np.zeros(len(y)), y))
    # Progress: each pass is its folds plus one final fit.
    passes = 2 if pool is not None else 1
    steps = passes * (calibration_folds + 1)

    with threadpool_limits(limits=max_threads):
        self_training = None
        extra_for_fold: list[np.ndarray | None] = [None] * len(splits)
        extra_final = final_expert = None
        if pool is not None:
            # First pass, without the text stage: each fold model (and the final one) pseudo-labels the pool.
            # Fold f's second-pass model then trains only on fold f's pseudo-labels, which come from a model
            # that never saw fold f's held-out labels: the calibration stays fitted on honest scores.
            first = _cross_validate(labels, texts, vectors, y, splits, seed, prior_head, text_stage=False, pool=pool,
                                    report=lambda step: report(step / steps))
            first_calibration = _calibrate(first, y)
            extra_for_fold = [_pseudo_labels(first_calibration, svm, expert)
                              for svm, expert in zip(first.pool_svm_scores, first.pool_expert_logits)]
            final_first = _fit(labels, texts, vectors, y, seed, text_stage=False)
            final_expert = fit_anchored_expert(vectors, y, prior_head=prior_head, n_classes=len(labels))
            extra_final = _pseudo_labels(first_calibration, final_first._svm_scores(
                pool.vectors, final_first._ngram_scores(pool.texts)[0]), final_expert.logits(pool.vectors))
            report((calibration_folds + 1) / steps)
            first_proba = first_calibration.proba(first.svm_scores, first.expert_logits)
            self_training = {
                "method": "pseudo-labels from a first pass, per calibration fold (see models_app.ml.fine_tuning)",
                "pool": len(pool.texts),
                "confidence": PSEUDO_LABEL_CONFIDENCE,
                "pseudo_labels": int(len(extra_final[0])),  # those the final head trains on
                "pseudo_labels_per_fold": [int(len(rows)) for rows, _ in extra_for_fold],
                "first_pass_cross_validated_accuracy": round(float((first_proba.argmax(axis=1) == y).mean()), 4),
            }
        done_before = (passes - 1) * (calibration_folds + 1)
        oof = _cross_validate(labels, texts, vectors, y, splits, seed, prior_head, text_stage=True, pool=pool,
                              extra_for_fold=extra_for_fold, report=lambda step: report((done_before + step) / steps))
        calibration = _calibrate(oof, y)
        calibrated_proba = calibration.proba(oof.svm_scores, oof.expert_logits)
        if self_training is not None:
            second_right = calibrated_proba.argmax(axis=1) == y
            self_training["second_pass_cross_validated_accuracy"] = round(float(second_right.mean()), 4)
            hurts, self_training["out_of_fold_worse_better"] = _self_training_hurts(first_proba.argmax(axis=1) == y,
                                                                                    second_right)
            self_training["kept"] = not hurts
            if hurts:
                extra_final = None
                oof = _cross_validate(labels, texts, vectors, y, splits, seed, prior_head, text_stage=True, pool=None,
                                      report=lambda step: None)
                calibration = _calibrate(oof, y)
                calibrated_proba = calibration.proba(oof.svm_scores, oof.expert_logits)
        fair = oof.trained_on_own_class
        text_temperature = fit_temperature(oof.text_scores[fair], y[fair], logits=True)
        text_proba = softmax(oof.text_scores / text_temperature, axis=1)
        # What the stage may answer: texts whose words its vocabulary (the fold's) mostly knows.
        stage_confidence = np.where(oof.known_share >= TEXT_STAGE_MIN_KNOWN, text_proba.max(axis=1), 0.0)
        threshold, stage_evidence = _choose_text_stage_threshold(text_proba[fair], stage_confidence[fair],
                                                                 calibrated_proba[fair], y[fair])
        final_texts, final_vectors, final_y = _with_pseudo_labels(texts, vectors, y, pool, extra_final)
        # A stage that is off is not fitted: inference would score its n-grams for nothing.
        head = _fit(labels, final_texts, final_vectors, final_y, seed, text_stage=threshold is not None)
        if calibration.weight > 0.0:
            head.vector_expert = (final_expert if final_expert is not None
                                  else fit_anchored_expert(vectors, y, prior_head=prior_head, n_classes=len(labels)))
            head.expert_temperature, head.expert_weight = calibration.expert_temperature, calibration.weight
            head.combined_temperature = calibration.combined_temperature
    report(1.0)

    raw_proba = softmax(oof.svm_scores, axis=1)
    head.temperature = calibration.temperature
    head.text_temperature, head.text_stage_threshold = text_temperature, threshold
    if threshold is not None:
        answered = stage_confidence >= threshold
        calibrated_proba[answered] = text_proba[answered]
    head.out_of_fold_proba = calibrated_proba
    head.details.update({
        "n": int(len(y)),
        "temperature": round(calibration.temperature, 4),
        "vector_expert": {
            "method": "logistic regression on the vectors anchored on the prior's log-probabilities "
                      "(models_app.ml.anchored)",
            "prior": "none (uniform)" if prior_head is None else type(prior_head).__name__,
            "weight": calibration.weight,
            "out_of_fold_log_loss_by_weight": calibration.candidates,
            "temperature": round(calibration.expert_temperature, 4),
            "combined_temperature": round(calibration.combined_temperature, 4),
        },
        "text_stage": {
            "method": "linear SVM on the n-grams alone; answers alone at or above the threshold, without the vector",
            "C": TEXT_STAGE_C,
            "temperature": round(text_temperature, 4),
            "threshold": threshold,
            "out_of_fold_by_threshold": stage_evidence,
        },
        "self_training": self_training,
        "calibration": {
            "method": f"temperature scaling on {calibration_folds}-fold cross-validated scores",
            "cross_validated_accuracy": round(float((calibrated_proba.argmax(axis=1) == y).mean()), 4),
            "ece_before": expected_calibration_error(y, raw_proba),
            "ece_after": expected_calibration_error(y, calibrated_proba),
        },
        "training_seconds": round(time.perf_counter() - started, 2),
    })
    return head


def _self_training_hurts(first_right: np.ndarray, second_right: np.ndarray) -> tuple[bool, list[int]]:
    """(whether the second pass is significantly worse than the first on the same out-of-fold records, and the
    discordant counts [right before and wrong after, wrong before and right after])."""
    worse, better = int((first_right & ~second_right).sum()), int((~first_right & second_right).sum())
    # mcnemar is two-sided; one side (worse) at SELF_TRAINING_DROP_P is the two-sided test at twice that.
    return worse > better and mcnemar(worse, better, alpha=2 * SELF_TRAINING_DROP_P)["significant"], [worse, better]


class _Pool(NamedTuple):
    """Unlabeled records for self-training: texts and their vectors."""
    texts: list[str]
    vectors: np.ndarray


class _OutOfFold:
    """Scores of each labeled record by the fold model that did not train on it, and (when a pool is given)
    each fold model's scores of the pool."""

    def __init__(self, n: int, k: int):
        self.svm_scores = np.full((n, k), _ABSENT_CLASS_SCORE, dtype=np.float64)
        self.expert_logits = np.zeros((n, k), dtype=np.float64)
        self.text_scores = np.full((n, k), _ABSENT_CLASS_SCORE, dtype=np.float64)
        self.known_share = np.zeros(n, dtype=np.float64)
        # Records whose label was missing from their fold's training part say nothing about the final model
        # (which trains on every label), so calibration is fitted on the others.
        self.trained_on_own_class = np.ones(n, dtype=bool)
        self.pool_svm_scores: list[np.ndarray] = []
        self.pool_expert_logits: list[np.ndarray] = []


def _cross_validate(labels: list[str], texts: list[str], vectors: np.ndarray, y: np.ndarray, splits: list, seed: int,
                    prior_head, *, text_stage: bool, pool: _Pool | None,
                    extra_for_fold: list | None = None, report: Callable[[int], None]) -> _OutOfFold:
    """One fit per fold on its training part (plus that fold's pseudo-labels, if any), scoring its held-out part.
    With `text_stage` False the text stage is neither fitted nor scored; the pool is scored only then (the
    first pass of self-training is what needs it)."""
    out = _OutOfFold(len(y), len(labels))
    for step, (train_index, test_index) in enumerate(splits):
        extra = extra_for_fold[step] if extra_for_fold else None
        fold_texts, fold_vectors, fold_y = _with_pseudo_labels([texts[i] for i in train_index], vectors[train_index],
                                                               y[train_index], pool, extra)
        fold_head = _fit(labels, fold_texts, fold_vectors, fold_y, seed, text_stage=text_stage)
        present = np.zeros(len(labels), dtype=bool)
        present[np.unique(y[train_index])] = True
        ngram_scores, text_scores, out.known_share[test_index] = fold_head._ngram_scores([texts[i] for i in test_index])
        scores = fold_head._svm_scores(vectors[test_index], ngram_scores)
        scores[:, ~present] = _ABSENT_CLASS_SCORE
        out.svm_scores[test_index] = scores
        if text_scores is not None:
            text_scores[:, ~present] = _ABSENT_CLASS_SCORE
            out.text_scores[test_index] = text_scores
        # The vector expert learns from the real labels only: pseudo-labels are the first pass's own confident
        # answers, which the n-grams learn new words from but which only reinforce the expert (measured: 0.3-0.9
        # points lower on Banking77 with them).
        fold_expert = fit_anchored_expert(vectors[train_index], y[train_index], prior_head=prior_head,
                                          n_classes=len(labels))
        out.expert_logits[test_index] = fold_expert.logits(vectors[test_index])
        out.trained_on_own_class[test_index] = present[y[test_index]]
        if pool is not None and not text_stage:
            pool_scores = fold_head._svm_scores(pool.vectors, fold_head._ngram_scores(pool.texts)[0])
            pool_scores[:, ~present] = _ABSENT_CLASS_SCORE
            # float32: a pool of 10,000 records over hundreds of labels would otherwise hold hundreds of MB
            # across the folds, for scores only compared against a confidence threshold.
            out.pool_svm_scores.append(pool_scores.astype(np.float32))
            out.pool_expert_logits.append(fold_expert.logits(pool.vectors).astype(np.float32))
        report(step + 1)
    return out


class _Calibration:
    """Temperatures of both experts and of their combination, and the expert weight, fitted on out-of-fold scores."""

    def __init__(self, temperature: float, expert_temperature: float, weight: float, combined_temperature: float,
                 candidates: dict):
        self.temperature, self.expert_temperature = temperature, expert_temperature
        self.weight, self.combined_temperature, self.candidates = weight, combined_temperature, candidates

    def proba(self, svm_scores: np.ndarray, expert_logits: np.ndarray) -> np.ndarray:
        if self.weight > 0.0:
            return softmax(_combine(svm_scores / self.temperature, expert_logits / self.expert_temperature,
                                    self.weight) / self.combined_temperature, axis=1)
        return softmax(svm_scores / self.temperature, axis=1)


def _calibrate(oof: _OutOfFold, y: np.ndarray) -> _Calibration:
    fair = oof.trained_on_own_class
    temperature = fit_temperature(oof.svm_scores[fair], y[fair], logits=True)
    expert_temperature = fit_temperature(oof.expert_logits[fair], y[fair], logits=True)
    weight, combined_temperature, candidates = _choose_expert_weight(
        oof.svm_scores[fair] / temperature, oof.expert_logits[fair] / expert_temperature, y[fair])
    return _Calibration(temperature, expert_temperature, weight, combined_temperature, candidates)


def _pseudo_labels(calibration: _Calibration, svm_scores: np.ndarray,
                   expert_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, their labels): the rows a first-pass model gives at least PSEUDO_LABEL_CONFIDENCE (calibrated)."""
    proba = calibration.proba(svm_scores, expert_logits)
    rows = np.flatnonzero(proba.max(axis=1) >= PSEUDO_LABEL_CONFIDENCE)
    return rows, proba[rows].argmax(axis=1).astype(np.int64)


def _with_pseudo_labels(texts: list[str], vectors: np.ndarray, y: np.ndarray, pool: _Pool | None,
                        extra: tuple[np.ndarray, np.ndarray] | None) -> tuple[list[str], np.ndarray, np.ndarray]:
    if pool is None or extra is None or not len(extra[0]):
        return texts, vectors, y
    rows, pseudo_y = extra
    return (texts + [pool.texts[i] for i in rows], np.vstack([vectors, pool.vectors[rows]]),
            np.concatenate([y, pseudo_y]))


def _choose_text_stage_threshold(stage_proba: np.ndarray, stage_confidence: np.ndarray, full_proba: np.ndarray,
                                 y: np.ndarray) -> tuple[float | None, list[dict]]:
    """(threshold or None, the evidence per candidate): the lowest candidate at which, and at every stricter
    candidate that covers enough records to count, the text stage is right on at least as many of the records
    it would answer as the full head is on those records, and wrong on at most TEXT_STAGE_MAX_ERROR of them
    (out of fold). `stage_confidence` is the stage's top probability, 0 where it may not answer."""
    stage_right = stage_proba.argmax(axis=1) == y
    full_right = full_proba.argmax(axis=1) == y
    chosen, evidence = None, []
    for threshold in TEXT_STAGE_THRESHOLDS:
        covered = stage_confidence >= threshold
        count = int(covered.sum())
        stage_correct, full_correct = int(stage_right[covered].sum()), int(full_right[covered].sum())
        evidence.append({"threshold": threshold, "coverage": round(count / max(len(y), 1), 4),
                         "text_stage_correct": stage_correct, "full_head_correct": full_correct})
        if count < TEXT_STAGE_MIN_COVERED:
            continue
        if stage_correct < full_correct or count - stage_correct > TEXT_STAGE_MAX_ERROR * count:
            break
        chosen = threshold
    return chosen, evidence


def _choose_expert_weight(svm_logits: np.ndarray, expert_logits: np.ndarray, y: np.ndarray) -> tuple[float, float, dict]:
    """(weight, temperature of the combination, mean out-of-fold log-loss per candidate weight): the candidate
    with the lowest log-loss once its combination is temperature-scaled; ties go to the smaller weight."""
    rows = np.arange(len(y))
    losses: dict[str, float] = {}
    best = (np.inf, 0.0, 1.0)
    for weight in EXPERT_WEIGHTS:
        combined = _combine(svm_logits, expert_logits, weight)
        temperature = fit_temperature(combined, y, logits=True)
        loss = float(-_log_softmax(combined / temperature)[rows, y].mean()) if len(y) else 0.0
        losses[str(weight)] = round(loss, 5)
        if loss < best[0] - 1e-9:
            best = (loss, weight, temperature)
    return best[1], best[2], losses


class NgramColumns:
    """The vocabulary columns of a text's n-grams, one per occurrence, as the fitted vectorizer counts them.

    Character n-grams of `char_wb` never cross a word boundary, so a text's are the concatenation of its
    words' (the text is lower-cased and split on whitespace, as the vectorizer does): each word's columns are
    computed once and kept, up to WORD_CACHE_SIZE words per process. A domain's messages reuse a small
    vocabulary, so at inference most words are already known and the Python n-gram loop (most of the head's
    time) is skipped. Word n-grams (bigrams cross words) are looked up per text.
    """

    WORD_CACHE_SIZE = 20_000

    def __init__(self, vectorizer: TfidfVectorizer):
        self.analyzer = vectorizer.build_analyzer()
        self.lookup = vectorizer.vocabulary_.get
        self.per_word = (vectorizer.analyzer == "char_wb" and vectorizer.lowercase and vectorizer.preprocessor is None
                         and vectorizer.strip_accents is None)
        self.words: dict[str, np.ndarray] = {}

    def _of(self, text: str) -> list[int]:
        return self._of_counted(text)[0]

    def _of_counted(self, text: str) -> tuple[list[int], int]:
        """(the known columns of the text's n-grams, how many n-grams it has, known or not)."""
        ngrams = self.analyzer(text)
        return [column for column in map(self.lookup, ngrams) if column is not None], len(ngrams)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every n-gram occurrence in `texts` that the vocabulary knows, rows ascending."""
        rows, columns, _ = self.with_known_share(texts)
        return rows, columns

    def with_known_share(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(row, column) as __call__, and for word n-grams the share of each text's n-grams the vocabulary knows
        (None for character n-grams, which are cached per word and not counted)."""
        lengths = []
        known_share = None
        if not self.per_word:
            found, totals = zip(*(self._of_counted(text) for text in texts)) if texts else ((), ())
            lengths = [len(columns) for columns in found]
            columns = np.fromiter(chain.from_iterable(found), dtype=np.int64, count=sum(lengths))
            known_share = np.asarray(lengths, dtype=np.float64) / np.maximum(np.asarray(totals, dtype=np.float64), 1.0)
        else:
            parts = []
            for text in texts:
                count = 0
                for word in text.lower().split():
                    word_columns = self.words.get(word)
                    if word_columns is None:
                        word_columns = np.asarray(self._of(word), dtype=np.int64)
                        if len(self.words) < self.WORD_CACHE_SIZE:
                            self.words[word] = word_columns
                    parts.append(word_columns)
                    count += len(word_columns)
                lengths.append(count)
            columns = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.repeat(np.arange(len(texts)), lengths), columns, known_share


def _tfidf_scores(texts: Sequence[str], columns_of: NgramColumns, vectorizer: TfidfVectorizer, coef: np.ndarray,
                  found: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """`vectorizer.transform(texts) @ coef` (sublinear TF, IDF, L2 norm), computed directly.

    Equal to the scikit-learn product up to float rounding, but several times faster for a handful of
    texts: it skips the vectorizer's intermediate count matrix, sorting and validation, counts every text's
    columns in one `np.unique`, and gathers only the coefficient rows the texts use. `found`: the texts'
    (row, column) pairs when the caller already has them.
    """
    idf = vectorizer.idf_
    width = len(idf)
    rows, columns = columns_of(texts) if found is None else found
    scores = np.zeros((len(texts), coef.shape[1]), dtype=np.float64)
    if not len(columns):
        return scores
    # One key per (text, column): its count is the term frequency; keys come out sorted by text.
    keys, counts = np.unique(rows * width + columns, return_counts=True)
    rows, columns = keys // width, keys % width
    weights = (1.0 + np.log(counts)) * idf[columns]
    weights /= np.sqrt(np.bincount(rows, weights=weights * weights, minlength=len(texts)))[rows]
    # float32 like `coef`: gathering its rows in another type would copy them.
    contributions = coef[columns] * weights.astype(coef.dtype)[:, None]
    present = np.flatnonzero(np.bincount(rows, minlength=len(texts)))
    scores[present] = np.add.reduceat(contributions, np.searchsorted(rows, present), axis=0)
    return scores


def _fit(labels: list[str], texts: list[str], vectors: np.ndarray, y: np.ndarray, seed: int, *,
         text_stage: bool = True) -> FineTunedHead:
    """One linear SVM on the stacked features; columns of the returned head follow `labels` (classes absent
    from `y` get the lowest possible score)."""
    word_vectorizer = TfidfVectorizer(ngram_range=WORD_NGRAMS, sublinear_tf=True, dtype=np.float32)
    # min_df=2 drops character n-grams seen once (mostly typos' debris), roughly halving the feature count.
    char_vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, min_df=2 if len(texts) >= 50 else 1,
                                      sublinear_tf=True, dtype=np.float32)
    word_features = word_vectorizer.fit_transform(texts)
    char_features = char_vectorizer.fit_transform(texts)
    for vectorizer in (word_vectorizer, char_vectorizer):
        # The set of n-grams cut by min_df is only kept for introspection and would bloat the artifact.
        if hasattr(vectorizer, "stop_words_"):
            del vectorizer.stop_words_
    features = sparse.hstack([sparse.csr_matrix(vectors), word_features * TEXT_FEATURE_WEIGHT,
                              char_features * TEXT_FEATURE_WEIGHT], format="csr")
    k = len(labels)
    dimension = vectors.shape[1]
    n_word = word_features.shape[1]
    coef, intercept = _fit_linear_svm(features, y, k, C, seed)
    details = {
        "method": "linear SVM on MiniLM vectors + word and character n-gram TF-IDF, temperature-calibrated",
        "C": C,
        "text_feature_weight": TEXT_FEATURE_WEIGHT,
        "word_ngrams": list(WORD_NGRAMS),
        "char_ngrams": list(CHAR_NGRAMS),
        "vocabulary": {"words": int(n_word), "character_ngrams": int(char_features.shape[1])},
    }
    head = FineTunedHead(
        labels=labels,
        word_vectorizer=word_vectorizer,
        char_vectorizer=char_vectorizer,
        embedding_coef=np.ascontiguousarray(coef[:dimension]),
        word_coef=np.ascontiguousarray(coef[dimension:dimension + n_word] * TEXT_FEATURE_WEIGHT),
        char_coef=np.ascontiguousarray(coef[dimension + n_word:] * TEXT_FEATURE_WEIGHT),
        intercept=intercept,
        temperature=1.0,
        details=details,
    )
    if text_stage:  # the same n-gram columns without the vector
        text_coef, text_intercept = _fit_linear_svm(sparse.hstack([word_features, char_features], format="csr"), y, k,
                                                    TEXT_STAGE_C, seed)
        head.text_word_coef = np.ascontiguousarray(text_coef[:n_word])
        head.text_char_coef = np.ascontiguousarray(text_coef[n_word:])
        head.text_intercept = text_intercept.astype(np.float64)
    return head


def _fit_linear_svm(features, y: np.ndarray, k: int, c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(coef (features x k) float32, intercept (k,)) of a one-vs-rest linear SVM whose columns follow the k labels;
    classes absent from `y` get the lowest possible score."""
    classifier = LinearSVC(C=c, max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Liblinear failed to converge")
        classifier.fit(features, y)
    coef = np.zeros((features.shape[1], k), dtype=np.float32)
    intercept = np.full(k, _ABSENT_CLASS_SCORE, dtype=np.float32)
    classes = classifier.classes_
    if len(classes) == 2:
        # Binary liblinear keeps one score for classes_[1]; the other class's score is its negative.
        coef[:, classes[1]], coef[:, classes[0]] = classifier.coef_[0], -classifier.coef_[0]
        intercept[classes[1]], intercept[classes[0]] = classifier.intercept_[0], -classifier.intercept_[0]
    else:
        coef[:, classes] = classifier.coef_.T
        intercept[classes] = classifier.intercept_
    return coef, intercept
