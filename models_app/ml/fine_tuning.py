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
less than the embedding itself. Contrastive fine-tuning of the encoder and a distilled static encoder
were measured too and rejected there (too slow to train on CPU / less accurate).

A second expert works on the vectors alone: logistic regression anchored on the describe-and-classify
head's log-probabilities (models_app/ml/anchored.py), which keeps what the label descriptions know where
labels are few. The two are combined log-linearly, `(1 − w) log p_svm + w log p_anchored`, with w chosen
from EXPERT_WEIGHTS by the out-of-fold log-likelihood (the same folds as the calibration), then temperature-scaled
once more. With few labels per class the anchored expert carries the head (the SVM alone was 1 point below
the active-learning head at 500 Banking77 labels); with many, the n-grams do. w = 0 is exactly the SVM.

SVM scores are not probabilities, so the head is calibrated: the scores of cross-validated fits (each
record scored by a model that did not train on it) are fitted with one softmax temperature (temperature
scaling), which fixes confidence without changing any prediction.
"""
from __future__ import annotations

import time
import warnings
from itertools import chain
from typing import Callable, Sequence

import numpy as np
from scipy import sparse
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from models_app.ml.anchored import AnchoredExpert, fit_anchored_expert
from models_app.ml.calibration import expected_calibration_error, fit_temperature

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

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["out_of_fold_proba"] = None
        state["_analyzers"] = None  # rebuilt from the vectorizers on first use
        return state

    def decision_scores(self, vectors: np.ndarray, texts: Sequence[str] | None) -> np.ndarray:
        if texts is None:
            raise ValueError("a fine-tuned head reads the texts as well as their vectors: pass texts")
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(texts) != vectors.shape[0]:
            raise ValueError(f"{vectors.shape[0]} vectors but {len(texts)} texts")
        if self._analyzers is None:
            self._analyzers = (NgramColumns(self.word_vectorizer), NgramColumns(self.char_vectorizer))
        word_columns, char_columns = self._analyzers
        scores = (vectors @ self.embedding_coef).astype(np.float64)
        scores += _tfidf_scores(texts, word_columns, self.word_vectorizer, self.word_coef)
        scores += _tfidf_scores(texts, char_columns, self.char_vectorizer, self.char_coef)
        return scores + self.intercept

    def predict_proba(self, vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        svm_scores = self.decision_scores(vectors, texts).astype(np.float64)
        expert = getattr(self, "vector_expert", None)
        if expert is None or self.expert_weight == 0.0:
            return softmax(svm_scores / self.temperature, axis=1)
        combined = _combine(svm_scores / self.temperature, expert.logits(vectors, texts) / self.expert_temperature,
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
                          prior_head=None) -> FineTunedHead:
    """Train on every labeled record: `texts[i]`, its vector `vectors[i]` and label index `y[i]` into `labels`.
    `prior_head` (the describe-and-classify head over the same labels, or None for a uniform prior) anchors the
    vector expert.

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
    report = progress or (lambda fraction: None)
    texts = list(texts)
    calibration_folds = CALIBRATION_FOLDS_SMALL if len(y) < SMALL_LABEL_SET else CALIBRATION_FOLDS_LARGE
    # Stratified folds cannot outnumber the examples of the largest label (2 examples each: 2 folds).
    calibration_folds = min(calibration_folds, int(counts.max()))
    steps = calibration_folds + 1

    with threadpool_limits(limits=max_threads):
        out_of_fold_scores = np.full((len(y), len(labels)), _ABSENT_CLASS_SCORE, dtype=np.float64)
        out_of_fold_expert = np.zeros((len(y), len(labels)), dtype=np.float64)
        trained_on_own_class = np.ones(len(y), dtype=bool)
        folds = StratifiedKFold(n_splits=calibration_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # Labels with only 2-3 examples cannot be in every fold; handled below.
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            splits = list(folds.split(np.zeros(len(y)), y))
        for step, (train_index, test_index) in enumerate(splits):
            fold_head = _fit(labels, [texts[i] for i in train_index], vectors[train_index], y[train_index], seed)
            present = np.zeros(len(labels), dtype=bool)
            present[np.unique(y[train_index])] = True
            scores = fold_head.decision_scores(vectors[test_index], [texts[i] for i in test_index])
            scores[:, ~present] = _ABSENT_CLASS_SCORE
            out_of_fold_scores[test_index] = scores
            fold_expert = fit_anchored_expert(vectors[train_index], y[train_index], prior_head=prior_head,
                                              n_classes=len(labels))
            out_of_fold_expert[test_index] = fold_expert.logits(vectors[test_index])
            trained_on_own_class[test_index] = present[y[test_index]]
            report((step + 1) / steps)

        # Records whose label was missing from their fold's training part say nothing about the final
        # model (which trains on every label), so the temperature is fitted on the others.
        fair = trained_on_own_class
        temperature = fit_temperature(out_of_fold_scores[fair], y[fair], logits=True)
        expert_temperature = fit_temperature(out_of_fold_expert[fair], y[fair], logits=True)
        weight, combined_temperature, candidates = _choose_expert_weight(
            out_of_fold_scores[fair] / temperature, out_of_fold_expert[fair] / expert_temperature, y[fair])
        head = _fit(labels, texts, vectors, y, seed)
        if weight > 0.0:
            head.vector_expert = fit_anchored_expert(vectors, y, prior_head=prior_head, n_classes=len(labels))
            head.expert_temperature, head.expert_weight = expert_temperature, weight
            head.combined_temperature = combined_temperature
    report(1.0)

    raw_proba = softmax(out_of_fold_scores, axis=1)
    if weight > 0.0:
        calibrated_proba = softmax(_combine(out_of_fold_scores / temperature, out_of_fold_expert / expert_temperature,
                                            weight) / combined_temperature, axis=1)
    else:
        calibrated_proba = softmax(out_of_fold_scores / temperature, axis=1)
    head.temperature = temperature
    head.out_of_fold_proba = calibrated_proba
    head.details.update({
        "n": int(len(y)),
        "temperature": round(temperature, 4),
        "vector_expert": {
            "method": "logistic regression on the vectors anchored on the prior's log-probabilities "
                      "(models_app.ml.anchored)",
            "prior": "none (uniform)" if prior_head is None else type(prior_head).__name__,
            "weight": weight,
            "out_of_fold_log_loss_by_weight": candidates,
            "temperature": round(expert_temperature, 4),
            "combined_temperature": round(combined_temperature, 4),
        },
        "calibration": {
            "method": f"temperature scaling on {calibration_folds}-fold cross-validated scores",
            "cross_validated_accuracy": round(float((calibrated_proba.argmax(axis=1) == y).mean()), 4),
            "ece_before": expected_calibration_error(y, raw_proba),
            "ece_after": expected_calibration_error(y, calibrated_proba),
        },
        "training_seconds": round(time.perf_counter() - started, 2),
    })
    return head


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
        return [column for column in map(self.lookup, self.analyzer(text)) if column is not None]

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every n-gram occurrence in `texts` that the vocabulary knows, rows ascending."""
        lengths = []
        if not self.per_word:
            found = [self._of(text) for text in texts]
            lengths = [len(columns) for columns in found]
            columns = np.fromiter(chain.from_iterable(found), dtype=np.int64, count=sum(lengths))
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
        return np.repeat(np.arange(len(texts)), lengths), columns


def _tfidf_scores(texts: Sequence[str], columns_of: NgramColumns, vectorizer: TfidfVectorizer, coef: np.ndarray) -> np.ndarray:
    """`vectorizer.transform(texts) @ coef` (sublinear TF, IDF, L2 norm), computed directly.

    Equal to the scikit-learn product up to float rounding, but several times faster for a handful of
    texts: it skips the vectorizer's intermediate count matrix, sorting and validation, counts every text's
    columns in one `np.unique`, and gathers only the coefficient rows the texts use.
    """
    idf = vectorizer.idf_
    width = len(idf)
    rows, columns = columns_of(texts)
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


def _fit(labels: list[str], texts: list[str], vectors: np.ndarray, y: np.ndarray, seed: int) -> FineTunedHead:
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
    classifier = LinearSVC(C=C, max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Liblinear failed to converge")
        classifier.fit(features, y)

    k = len(labels)
    dimension = vectors.shape[1]
    n_word = word_features.shape[1]
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
    details = {
        "method": "linear SVM on MiniLM vectors + word and character n-gram TF-IDF, temperature-calibrated",
        "C": C,
        "text_feature_weight": TEXT_FEATURE_WEIGHT,
        "word_ngrams": list(WORD_NGRAMS),
        "char_ngrams": list(CHAR_NGRAMS),
        "vocabulary": {"words": int(n_word), "character_ngrams": int(char_features.shape[1])},
    }
    return FineTunedHead(
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
