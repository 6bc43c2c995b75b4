"""Caption scores of pycocoevalcap 1.2 (salaniz/pycocoevalcap), without Java: CIDEr-D (Vedantam et al.
2015, as ``cider/cider_scorer.py`` computes it: TF-IDF n-gram vectors, document frequency over the
reference sets of the evaluated corpus, clipped candidate counts, Gaussian length penalty sigma = 6, x10)
and BLEU-1..4 (as ``bleu/bleu_scorer.py`` with ``Bleu.compute_score``'s "closest" reference length and
its tiny/small smoothing).

Inputs are already-tokenised strings (:func:`~mmssm_lightning.eval.ptb.ptb_tokenize_corpus`), keyed by
image id: ``gts = {id: [ref, ...]}``, ``res = {id: [candidate]}``, images taken in ``gts`` order as the
scorers take them. Both reproduce pycocoevalcap's arithmetic operation for operation (numpy's log and
pairwise mean, ``e ** x`` rather than ``exp``), so scores agree to the last bit, and its quirks on purpose,
e.g. CIDEr's length penalty counts bigrams, not words.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np


def _ngrams(sentence: str, n: int = 4) -> Counter:
    words = sentence.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _images(gts: Mapping[str, Sequence[str]], res: Mapping[str, Sequence[str]]) -> list[str]:
    """The image ids in ``gts`` order; the scorers assert both sides name the same images, one candidate
    and at least one reference each."""
    if set(gts) != set(res):
        missing = sorted(set(gts) ^ set(res), key=str)[:5]
        raise ValueError(
            f"references and candidates must cover the same images; these are on one side: {missing}"
        )
    for i in gts:
        if len(res[i]) != 1 or len(gts[i]) == 0:
            raise ValueError(
                f"image {i!r}: needs one candidate and references, has {len(res[i])} and {len(gts[i])}"
            )
    return list(gts)


def cider_d(
    gts: Mapping[str, Sequence[str]], res: Mapping[str, Sequence[str]], n: int = 4, sigma: float = 6.0
):
    """(corpus CIDEr-D, per-image scores in ``gts`` order)."""
    ids = _images(gts, res)
    crefs = [[_ngrams(r, n) for r in gts[i]] for i in ids]
    ctest = [_ngrams(res[i][0], n) for i in ids]
    df: Counter = Counter()
    for refs in crefs:
        df.update({g for ref in refs for g in ref})
    ref_len = float(np.log(float(len(crefs))))

    def vec(counts: Counter):
        v = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            v[k][g] = float(tf) * (ref_len - float(np.log(max(1.0, df[g]))))
            norm[k] += v[k][g] ** 2
            if k == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    scores = []
    for test, refs in zip(ctest, crefs):
        v, nv, lv = vec(test)
        total = [0.0] * n
        for ref in refs:
            r, nr, lr = vec(ref)
            delta = float(lv - lr)
            for k in range(n):
                val = 0.0  # a running sum: Python >= 3.12's sum() would compensate
                for g, c in v[k].items():
                    val += min(c, r[k][g]) * r[k][g]
                if nv[k] != 0 and nr[k] != 0:
                    val /= nv[k] * nr[k]
                total[k] += val * math.e ** (-(delta**2) / (2 * sigma**2))
        scores.append(float(np.mean(total)) / len(refs) * 10.0)
    return (float(np.mean(scores)) if scores else 0.0), scores


def bleu(gts: Mapping[str, Sequence[str]], res: Mapping[str, Sequence[str]], n: int = 4):
    """(corpus BLEU-1..n, per-image BLEU-1..n lists in ``gts`` order) as pycocoevalcap's ``Bleu(4)``."""
    tiny, small = 1e-15, 1e-9
    total_guess, total_correct = [0] * n, [0] * n
    test_len_sum = ref_len_sum = 0
    per_image: list[list[float]] = [[] for _ in range(n)]
    for i in _images(gts, res):
        refs = [r.split() for r in gts[i]]
        test = res[i][0].split()
        max_counts: Counter = Counter()
        for ref in refs:
            for g, c in _ngrams(" ".join(ref), n).items():
                max_counts[g] = max(max_counts[g], c)
        counts = _ngrams(" ".join(test), n)
        guess = [max(len(test) - k, 0) for k in range(n)]
        correct = [0] * n
        for g, c in counts.items():
            correct[len(g) - 1] += min(max_counts.get(g, 0), c)
        reflen = min((abs(len(r) - len(test)), len(r)) for r in refs)[1]  # "closest"
        test_len_sum += len(test)
        ref_len_sum += reflen
        score = 1.0
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
            score *= (correct[k] + tiny) / (guess[k] + small)
            per_image[k].append(score ** (1.0 / (k + 1)))
        ratio = (len(test) + tiny) / (reflen + small)
        if ratio < 1:
            for k in range(n):
                per_image[k][-1] *= math.exp(1 - 1 / ratio)
    scores, score = [], 1.0
    for k in range(n):
        score *= (total_correct[k] + tiny) / (total_guess[k] + small)
        scores.append(score ** (1.0 / (k + 1)))
    ratio = (test_len_sum + tiny) / (ref_len_sum + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores, per_image
