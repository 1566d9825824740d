"""The `gallery` command: parse options, make one library call, print the answer."""

from __future__ import annotations

import json
import logging
import sys
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING


import click

from . import __version__
from .distributed import ENGINES
from .errors import GalleryError
from .embed.detect import DETECT_MAX_SIDE, DETECTORS
from .progress import echo
from .search import AGGREGATES
from .wording import counted, first_names

if TYPE_CHECKING:
    from .gallery import Gallery

#: ``gallery calibrate``'s help says this; tests/test_layout.py checks it is the metrics' own figure.
MIN_FALSE_ACCEPTS = 10

GALLERY_HELP = "Gallery folder (default: $GALLERY_DIR, else ./gallery)."


class _Later:
    """A constant of a module imported only when click needs its value (to parse options or show one
    command's help), so that ``gallery --help`` and the commands that need neither load no FAISS,
    pyarrow or torch; click calls it for the default and prints it in help."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self):
        return getattr(import_module(self.module, __package__), self.name)

    def __str__(self) -> str:
        return str(self())


class _LaterChoice(click.Choice):
    """A :class:`click.Choice` of the keys of a :class:`_Later` constant, read when first needed."""

    def __init__(self, module: str, name: str):
        self._later, self._choices, self.case_sensitive = _Later(module, name), None, True

    @property
    def choices(self) -> tuple[str, ...]:
        if self._choices is None:
            self._choices = tuple(sorted(self._later()) if isinstance(self._later(), dict) else self._later())
        return self._choices


class _Group(click.Group):
    """Turns library errors into one-line messages and Ctrl-C into a reassuring exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GalleryError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: the gallery is as it was before this command; rerun it to resume", err=True)
            sys.exit(130)


def _gallery_option(*names: str):
    return click.option(
        *names, "-g", "--gallery", "gallery_dir", type=click.Path(file_okay=False, path_type=Path),
        envvar="GALLERY_DIR", default="gallery", show_default=True, help=GALLERY_HELP,
    )


def _index_options(f):
    f = click.option("--rerank", type=click.IntRange(min=1), help="ivfpq: exact re-rank of RERANK * k candidates.")(f)
    f = click.option("--nprobe", type=click.IntRange(min=1), help="ivfpq: inverted lists visited per query (default: measured on the gallery's own images).")(f)
    f = click.option("--pq-m", type=click.IntRange(min=1), help="ivfpq: PQ sub-quantisers (must divide d; default: d/4 within [16, 64], where the gallery's own images show the codes lose answers first given a rotation trained for them, then doubled). Given, the codes are kept as they are.")(f)
    f = click.option("--nlist", type=click.IntRange(min=1), help="ivfpq: inverted lists (default ~4*sqrt(n)).")(f)
    return f


def _wait_option(f):
    return click.option("--wait", type=click.FloatRange(min=0), default=0, show_default=True, metavar="SECONDS",
                        help="If another process is changing the gallery, wait this long for it before giving up.")(f)


def _group_access_option(f):
    return click.option("--group-access", is_flag=True,
                        help="Make a new gallery readable by your group (folders 0750, files 0640); "
                             "by default only you can read it (0700 / 0600).")(f)


def _quiet_option(f):
    return click.option("-q", "--quiet", is_flag=True,
                        help="No progress on stderr (the answer, warnings and errors still print).")(f)


def _json_options(what: str):
    """--json (JSON Lines, each answer as it is ready) and --json-array (one JSON document at the end)."""

    def wrap(f):
        f = click.option("--json-array", is_flag=True,
                         help=f"Print one JSON document instead: an array of the {what} objects, at the end.")(f)
        f = click.option("--json", "as_json", is_flag=True,
                         help=f"Print JSON Lines instead of a table: one JSON object per {what} on its own line, "
                              "each as soon as it is ready (for jq, or json.loads per line).")(f)
        return f

    return wrap


class _JsonOut:
    """Where --json and --json-array answers go: a line each as they come, or one array at the end."""

    def __init__(self, lines: bool, array: bool):
        if lines and array:
            raise click.UsageError("--json and --json-array cannot be used together; pick one")
        self.lines, self.array = lines, array
        self.items: list[dict] = []

    def write(self, item: dict) -> bool:
        """Print (or keep) ``item``; False when neither was asked for and the caller prints a table."""
        if self.lines:
            echo(json.dumps(item))
        elif self.array:
            self.items.append(item)
        return self.lines or self.array

    def close(self) -> None:
        if self.array:
            echo(json.dumps(self.items, indent=2))


def _engine_options(sharded: bool):
    """--engine/--address (and --shards for search): where the work runs."""

    def wrap(f):
        if sharded:
            f = click.option("--shards", type=click.IntRange(min=1), default=1, show_default=True,
                             help="ray: actors holding the gallery, split by identity.")(f)
        f = click.option("--address", metavar="ADDR",
                         help="ray: the cluster to join (e.g. ray://head:10001; default: $RAY_ADDRESS, else a local one).")(f)
        f = click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                         help="local: this machine; ray: a Ray cluster (needs pip install 'gallery[ray]').")(f)
        return f

    return wrap


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="gallery")
@click.option("-v", "--verbose", count=True, help="Log what happens (-vv for debug).")
def main(verbose: int) -> None:
    """Large-scale 1:N identification: who, among the enrolled identities, is this — or is it nobody we know?

    \b
    Enrol photos, then ask who is in a probe photo:
      gallery build photos/            # photos/<identity>/*.jpg -> ./gallery
      gallery query probe.jpg -k 5

    \b
    Or enrol embeddings you already have, then search:
      gallery synthesize demo.parquet --identities 10000 --probes probes.npy
      gallery import-vectors demo.parquet -g demo-gallery
      gallery search-vectors probes.npy -g demo-gallery -k 5
      gallery info -g demo-gallery

    Scores are cosine similarities in [-1, 1] (higher = more alike); a query is matched to its best
    identity when score >= threshold, otherwise it is "unknown".
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    # a person reads "warning: ..." (with -v, where each line comes from as well)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if verbose else "warning: %(message)s")
    logging.getLogger("faiss.loader").setLevel(max(level, logging.WARNING))


@main.command("import-vectors")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_gallery_option("-o")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labels for a .npy SOURCE: a text file (one per line) or a CSV with an identity column.")
@click.option("--vector-column", default="vector", show_default=True, help="Column/dataset holding the vectors.")
@click.option("--label-column", default="identity", show_default=True, help="Column/dataset holding identity labels.")
@click.option("--source-column", default="source", show_default=True, help="Optional column with each row's source.")
@click.option("--model", type=str, default=_Later(".gallery", "DEFAULT_MODEL"), show_default=True,
              help="Name of the model that made the vectors.")
@click.option("--format", "shard_format", type=_LaterChoice(".store", "FORMATS"), default="parquet", show_default=True,
              help="Shard file format of a new gallery.")
@click.option("--rows-per-shard", type=click.IntRange(min=1), default=_Later(".gallery", "DEFAULT_ROWS_PER_SHARD"), show_default=True)
@click.option("--index", "index_kind", type=_LaterChoice(".index", "KINDS"), default="auto", show_default=True,
              help="auto: flat (exact) for small galleries, ivfpq above 64M floats (n*d).")
@_index_options
@click.option("--replace", is_flag=True, help="Replace an existing gallery instead of adding to it.")
@_group_access_option
@_wait_option
@_quiet_option
def import_vectors(source, gallery_dir, labels, vector_column, label_column, source_column, model, shard_format,
                   rows_per_shard, index_kind, nlist, pq_m, nprobe, rerank, replace, group_access, wait, quiet) -> None:
    """Enrol precomputed embeddings from SOURCE (.parquet, .h5/.hdf5, or .npy with --labels).

    Creates the gallery if the folder has none, otherwise adds to it without retraining its index
    (use --replace to rebuild it from SOURCE alone). An interrupted import resumes when rerun.
    """
    from .gallery import Gallery
    from .store import read_labelled_vectors

    data = read_labelled_vectors(source, labels=labels, vector_column=vector_column, label_column=label_column,
                                 source_column=source_column)
    g = Gallery.enrol(data.vectors, data.identities, gallery_dir, replace=replace, model=model, sources=data.sources,
                      progress=not quiet, index=index_kind, shard_format=shard_format, rows_per_shard=rows_per_shard,
                      nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank, wait=wait, group_access=group_access)
    click.echo(f"{gallery_dir}: {len(g)} records, {len(g.identities)} identities, index {g.manifest.index.factory}")
    _warn_if_fallback(g)


@main.command("search-vectors")
@click.argument("queries", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_gallery_option()
@click.option("-k", type=click.IntRange(min=1), default=5, show_default=True, help="Identities per query.")
@click.option("--threshold", type=float,
              help="Open-set threshold (cosine): matched iff score >= T. Default: the gallery's calibrated one.")
@click.option("--aggregate", type=click.Choice(AGGREGATES), default="max", show_default=True,
              help="An identity's score: its best image, or the mean of its --top-n best images.")
@click.option("--top-n", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--nprobe", type=click.IntRange(min=1), help="ivfpq: inverted lists visited (this call only).")
@click.option("--rerank", type=click.IntRange(min=1), help="ivfpq: re-rank factor (this call only).")
@click.option("--recheck-nprobe", type=click.IntRange(min=1),
              help="ivfpq: lists searched again for queries scoring below the threshold (default: none; this call only).")
@click.option("--vector-column", default="vector", show_default=True)
@_json_options("query")
@_engine_options(sharded=True)
def search_vectors(queries, gallery_dir, k, threshold, aggregate, top_n, nprobe, rerank, recheck_nprobe, vector_column, as_json,
                   json_array, engine, address, shards) -> None:
    """Find the top-k enrolled identities for each query vector in QUERIES (.npy, .parquet, .h5).

    \b
    With --engine ray --shards S the gallery is split by identity over S Ray actors and every query
    is answered by all of them; the answers are the local engine's.
    """
    from .gallery import Gallery
    from .store.imports import read_query_vectors

    out = _JsonOut(as_json, json_array)
    data = read_query_vectors(queries, vector_column=vector_column)
    g = Gallery.open(gallery_dir, engine=engine, shards=shards, address=address)
    results = g.search(data.vectors, k=k, threshold=threshold, aggregate=aggregate, top_n=top_n,
                       nprobe=nprobe, rerank=rerank, recheck_nprobe=recheck_nprobe)
    truth = data.identities
    if out.lines or out.array:
        for q, r in enumerate(results):
            out.write({"query": q, **r.to_dict(), **({"label": truth[q]} if truth is not None else {})})
        out.close()
        return
    click.echo(_results_table(results, truth))


def _compared(score: float, threshold: float) -> tuple[str, str]:
    """``score`` and ``threshold`` printed with the fewest decimals (at least 4) at which the printed
    numbers compare as the real ones do, so ``0.9010 < 0.901`` never appears."""
    for digits in range(4, 10):
        s, t = f"{score:.{digits}f}", f"{threshold:.{digits}f}"
        if (float(s) >= float(t)) == (score >= threshold) and (s != t or score == threshold):
            return s, t
    return repr(score), repr(threshold)


def _results_table(results, truth) -> str:
    first = results[0] if results else None
    lines = []
    if first is not None:
        shown = [_compared(m.score, first.threshold)[1] for r in results for m in r.matches] or [f"{first.threshold:.4f}"]
        lines.append(f"threshold {max(shown, key=len)} ({first.threshold_source}); match iff cosine >= threshold")
    lines.append(f"{'query':>5}  {'decision':<24} {'rank':>4}  {'identity':<24} {'cosine':>7}  images")
    for q, r in enumerate(results):
        decision = r.identity if r.identity is not None else "unknown"
        if truth is not None:
            decision += f"  (label {truth[q]})" if truth[q] is not None else "  (label -)"
        for rank, m in enumerate(r.matches, 1):
            lead = f"{q:>5}  {decision:<24}" if rank == 1 else " " * 31
            lines.append(f"{lead} {rank:>4}  {m.identity:<24} {_compared(m.score, r.threshold)[0]:>7}  {len(m.records)}")
        if not r.matches:
            lines.append(f"{q:>5}  {decision:<24}    -  (empty gallery)")
    return "\n".join(lines)


@main.command("info")
@_gallery_option()
@click.option("--verify", is_flag=True, help="Also recompute every file checksum.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(gallery_dir, verify, as_json) -> None:
    """Counts, model, index, open-set threshold, and disk and RAM size of a gallery."""
    from .gallery import Gallery

    g = Gallery.open(gallery_dir)
    if verify:
        g.verify()
    d = g.info()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    idx = d["index"] or {}
    params = ", ".join(f"{k}={idx[k]}" for k in ("nlist", "pq_m", "nprobe", "rerank", "recheck_nprobe", "shortlist") if idx.get(k))
    rows = [
        ("gallery", d["path"]),
        ("model", f"{d['model']} (d={d['dim']})"),
        ("records", f"{d['records']} vectors of {d['identities']} identities"),
        ("shards", f"{d['shards']} x {d['shard_format']} (<= {d['rows_per_shard']} rows each)"),
        ("index", f"{idx.get('kind', 'none')} [{idx.get('factory', '')}] {params}".rstrip()),
        ("threshold", f"{d['threshold']['value']:.4f} ({d['threshold']['source']}); match iff cosine >= threshold"),
        ("disk", _human_bytes(d["disk_bytes"])),
        ("ram", f"{_human_bytes(d['ram_bytes']['index'] + d['ram_bytes']['labels'])} "
                f"({d['ram_bytes']['per_vector']:.1f} B per vector)"),
    ]
    cal = d.get("calibration")
    if cal:
        rows.append(("calibrated", f"{cal['value']:.4f} at FPIR {cal['target_fpir']:g} on {cal['gallery_identities']} identities "
                                   f"({cal['protocol']}, {cal['n_nonmated']} non-mated searches)"))
    if verify:
        rows.append(("checksums", "all files match the manifest"))
    if idx.get("advice"):
        rows.append(("advice", idx["advice"]))
    provenance = d["threshold"]["provenance"]
    if provenance.get("warning"):
        rows.append(("warning", provenance["warning"]))
    elif provenance.get("evidence") and d["threshold"]["source"] == "model-default":
        rows.append(("evidence", provenance["evidence"]))
    click.echo("\n".join(f"{k:<10} {v}" for k, v in rows))


@main.command("calibrate")
@click.argument("gallery_arg", metavar="[GALLERY]", required=False, type=click.Path(file_okay=False, path_type=Path))
@_gallery_option()
@click.option("--probes", type=click.Path(exists=True, path_type=Path),
              help="Labelled probes: a photo folder (<identity>/<images>) or CSV for a photo gallery, or vectors "
                   "(.parquet/.h5 with an identity column, or .npy with --labels). "
                   "Without it, identities are left out of the gallery itself.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Labels for .npy probes.")
@click.option("--target-fpir", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=1e-3, show_default=True,
              help="Accepted fraction of unknown people wrongly matched to someone.")
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Without --probes: fraction of identities left out to play the unknown people.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--allow-few-searches", "allow_few", is_flag=True,
              help=f"Calibrate even with fewer than {MIN_FALSE_ACCEPTS}/FPIR non-mated searches (recorded as "
                   "insufficient evidence); otherwise calibration refuses and says what the target needs.")
@_wait_option
@_quiet_option
def calibrate(gallery_arg, gallery_dir, probes, labels, target_fpir, holdout, seed, allow_few, wait, quiet) -> None:
    """Set the open-set threshold for a target FPIR and store it in the manifest.

    Probes whose label is enrolled are mated searches; any other label (or '-') is a non-mated one.
    A target FPIR needs at least 10/FPIR non-mated searches (10,000 for 1e-3), the same rule `gallery
    eval` uses. The threshold follows the gallery as it grows: the measured one plus the rise a tail
    fit of the impostor scores predicts. On an ivfpq gallery it also measures how many lists a search
    must visit to find an image of the person above the threshold, and raises nprobe to that.
    """
    from .calibration import calibrate as calibrate_probes
    from .calibration import calibrate_leave_out
    from .gallery import Gallery

    g = Gallery.open(gallery_arg or gallery_dir, wait=wait)
    if probes is not None:
        vectors, identities = _labelled_probes(g, probes, labels, progress=not quiet)
        cal = calibrate_probes(g, vectors, identities, target_fpir=target_fpir, allow_few=allow_few)
    else:
        cal = calibrate_leave_out(g, target_fpir=target_fpir, holdout=holdout, seed=seed, allow_few=allow_few)
    g.set_calibration(cal)
    fnir = "n/a (no mated searches)" if cal.fnir is None else f"{cal.fnir:.4f}"
    click.echo(f"threshold {cal.value:.6f} at FPIR {cal.achieved_fpir:.2e} (95% interval {cal.fpir_low:.2e} .. "
               f"{cal.fpir_high:.2e}; target {cal.target_fpir:g}) on {cal.n_nonmated} non-mated and {cal.n_mated} "
               f"mated searches ({cal.protocol}), FNIR {fnir}")
    click.echo(f"at the gallery's {len(g.identities)} identities the threshold is {g.threshold()[0]:.6f}")
    spec = g.index_spec
    if cal.nprobe is not None and spec is not None and spec.kind == "ivfpq":
        click.echo(f"searches visit {spec.nprobe} of {spec.nlist} cells per query (the threshold was measured "
                   f"over {cal.nprobe} of {cal.nlist}: the cells in which the gallery's images find a mate above it)")


def _labelled_probes(g: Gallery, probes: Path, labels, *, progress: bool):
    """Probe vectors and labels from a photo folder or CSV of photos, or from a labelled vector file."""
    if probes.is_dir() or probes.suffix.lower() == ".csv":
        return g.embed_labelled_photos(probes, progress=progress)
    from .store import read_labelled_vectors

    data = read_labelled_vectors(probes, labels=labels)
    return data.vectors, list(data.identities)


@main.command("eval")
@click.argument("gallery_arg", metavar="[GALLERY]", required=False, type=click.Path(file_okay=False, path_type=Path))
@_gallery_option()
@click.option("--probes", type=click.Path(exists=True, path_type=Path),
              help="Labelled probes (a photo folder or CSV, or vectors) for the 1:N part; without it, "
                   "identities are left out of the gallery.")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Labels for .npy probes.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default="gallery-eval",
              show_default=True, help="Folder for metrics.json, the PNG figures, report.md and report.html.")
@click.option("--max-samples", type=click.IntRange(min=10), default=5000, show_default=True,
              help="Records (whole identities) used for the all-pairs metrics.")
@click.option("--seed", type=int, default=0, show_default=True)
@_quiet_option
def eval_command(gallery_arg, gallery_dir, probes, labels, out_dir, max_samples, seed, quiet) -> None:
    """Measure a gallery: retrieval, pair distributions, 1:1 ROC/EER/TAR@FAR, 1:N CMC and FNIR@FPIR.

    Writes every number to OUT/metrics.json and a report with figures to OUT/report.md and the
    self-contained OUT/report.html.
    """
    from .evaluation import evaluate, write_report
    from .gallery import Gallery

    g = Gallery.open(gallery_arg or gallery_dir)
    vectors, identities = _labelled_probes(g, probes, labels, progress=not quiet) if probes is not None else (None, None)
    ev = evaluate(g, vectors, identities, max_samples=max_samples, seed=seed)
    paths = write_report(ev, out_dir, seed=seed, thumbnail=g.thumbnail if g.manifest.model_spec else None)
    r, i = ev.summary["retrieval"], ev.summary["identification"]
    eer = ev.summary["verification"]["eer"]
    click.echo(f"Recall@1 {r['recall@1']:.4f}  MAP@R {r['map@r']:.4f}  EER {'n/a' if eer is None else f'{eer:.4f}'}  "
               f"rank-1 {i['cmc'].get('rank1', float('nan')):.4f} ({i['protocol']})")
    click.echo(f"report: {paths['report.html']}")


@main.command("remove")
@click.argument("identities", nargs=-1, required=True)
@_gallery_option()
@_wait_option
@_quiet_option
def remove(identities, gallery_dir, wait, quiet) -> None:
    """Remove IDENTITIES from the gallery and erase them from every file in it.

    Their shards are rewritten without them, their photos leave the build reports, what interrupted
    runs left is erased, and every superseded file is overwritten with zeros before it is deleted.
    """
    from .gallery import Gallery

    g = Gallery.open(gallery_dir, wait=wait)
    n = g.remove(list(identities), progress=not quiet)
    click.echo(f"removed {counted(n, 'record')} of {counted(len(identities), 'identity', 'identities')}; "
               f"{counted(len(g), 'record')} of {counted(len(g.identities), 'identity', 'identities')} remain")


@main.command("rebuild-index")
@_gallery_option()
@click.option("--index", "index_kind", type=_LaterChoice(".index", "KINDS"), default="auto", show_default=True)
@_index_options
@_wait_option
@_quiet_option
def rebuild_index(gallery_dir, index_kind, nlist, pq_m, nprobe, rerank, wait, quiet) -> None:
    """Retrain and rebuild the index from the stored vectors (after much growth, or to change its kind)."""
    from .gallery import Gallery

    g = Gallery.open(gallery_dir, wait=wait)
    spec = g.rebuild_index(index_kind, nlist=nlist, pq_m=pq_m, nprobe=nprobe, rerank=rerank, progress=not quiet)
    click.echo(f"{gallery_dir}: rebuilt {spec.kind} index [{g.manifest.index.factory}] over {len(g)} vectors")


@main.command("synthesize")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--identities", "n_identities", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--images", type=click.IntRange(min=1), default=3, show_default=True, help="Images per identity.")
@click.option("--dim", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--genuine", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.6, show_default=True,
              help="Mean cosine between two images of one identity.")
@click.option("--probes", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write probes here: new images of enrolled identities and of strangers.")
@click.option("--n-probes", type=click.IntRange(min=1), default=10, show_default=True, help="Mated probes (as many non-mated).")
@click.option("--seed", type=int, default=0, show_default=True)
def synthesize(out, n_identities, images, dim, genuine, probes, n_probes, seed) -> None:
    """Write synthetic identity-clustered unit vectors to OUT (.parquet, .h5 or .npy) for trying gallery out."""
    from .store.imports import write_labelled_vectors
    from .synthetic import synthetic_gallery, synthetic_probes

    data = synthetic_gallery(n_identities, images, dim, genuine=genuine, seed=seed)
    write_labelled_vectors(out, data.vectors, data.identities, model="synthetic")
    click.echo(f"{out}: {len(data.vectors)} vectors of {n_identities} identities, d={dim}")
    if probes is not None:
        pv, pl = synthetic_probes(data, n_probes, n_probes, seed=seed + 1)
        write_labelled_vectors(probes, pv, ["-" if p is None else p for p in pl], model="synthetic")
        click.echo(f"{probes}: {n_probes} mated and {n_probes} non-mated probes (label '-' = not enrolled)")


@main.command("train")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the trained encoder (TorchScript, for `gallery build --model torchscript:OUT`).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Labels for a .npy DATA.")
@click.option("--loss", type=click.Choice(["softmax", "nsl", "sphereface", "cosface", "arcface", "contrastive", "triplet"]),
              default="arcface", show_default=True)
@click.option("--mode", type=click.Choice(["head", "finetune"]), default="head", show_default=True,
              help="head: a small projection head on the frozen vectors; finetune: every weight of --init.")
@click.option("--init", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="finetune: the encoder to start from (one written by `gallery train`).")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=256, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--s", "scale", type=click.FloatRange(0, min_open=True), help="Logit scale (default: the loss's paper's).")
@click.option("--m", "margin", type=click.FloatRange(0), help="Margin (default: the loss's paper's).")
@click.option("--dim", type=click.IntRange(min=1), help="head: output dimension (default: the input's).")
@click.option("--mining", type=click.Choice(["batch-all", "batch-hard", "semi-hard"]),
              help="contrastive/triplet: which pairs or triplets of a batch count.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Fraction of the identities (drawn at random) held out for validation.")
@click.option("--metric", type=click.Choice(["map@r", "recall@1"]), default="map@r", show_default=True,
              help="Validation metric for early stopping and picking the best epoch.")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
              help="Stop after this many epochs without a better validation metric.")
@click.option("--partial-fc", "partial_fc", type=click.FloatRange(0, 1, min_open=True), metavar="RATE",
              help="Sample this fraction of the class centres per step (positives always kept): for very many identities.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint of an interrupted run.")
@click.option("--vector-column", default="vector", show_default=True)
@click.option("--label-column", default="identity", show_default=True)
@click.option("--base-model", help="head mode: the model whose embeddings the head adapts (photos: default "
                                   "dlib-resnet; vectors: the model that made them, to use the head on photos).")
@click.option("--workers", type=click.IntRange(min=0), help="Photo DATA: face detection processes.")
@_quiet_option
def train(data, out, labels, loss, mode, init, epochs, batch_size, lr, scale, margin, dim, mining, val_fraction, metric,
          patience, partial_fc, seed, resume, vector_column, label_column, base_model, workers, quiet) -> None:
    """Train an encoder on DATA: a photo folder (<identity>/<photos>) or CSV, or labelled vectors
    (.parquet, .h5/.hdf5, or .npy with --labels).

    \b
    Identities are split at random into training and validation sets that share no identity; the epoch
    with the best validation metric is written to OUT, with a checkpoint per epoch beside it. Then:
      gallery train photos/ --loss arcface --out head.pt
      gallery build photos/ --model torchscript:head.pt
    """
    from .train import train_encoder

    r = train_encoder(data, out, base_model=base_model, workers=workers, labels=labels, loss=loss, mode=mode, init=init, epochs=epochs, batch_size=batch_size,
                      lr=lr, s=scale, m=margin, dim=dim, mining=mining, val_fraction=val_fraction, seed=seed,
                      partial_fc=partial_fc, metric=metric, patience=patience, resume=resume,
                      vector_column=vector_column, label_column=label_column, progress=not quiet)
    first = r.history[0]["val"][metric]
    source = "x".join(map(str, r.encoder["input_shape"])) + (" chips" if r.encoder["input"] == "image" else "-d vectors")
    click.echo(f"{out}: {source} -> {r.encoder['dim']}-d; validation {metric} "
               f"{first:.4f} untrained -> {r.best_score:.4f} at epoch {r.best_epoch} of {len(r.history) - 1}"
               + (" (stopped early)" if r.stopped_early else ""))


def _photo_options(f):
    f = click.option("--workers", type=click.IntRange(min=0),
                     help="Processes that decode, detect and align (default: one per core, up to 8; 0 = none).")(f)
    f = click.option("--max-side", type=click.IntRange(min=64), default=DETECT_MAX_SIDE, show_default=True,
                     help="Long side at which faces are searched for; larger photos are downscaled for detection only "
                          "(landmarks use full resolution). Where no face is found, a second search at twice the size.")(f)
    f = click.option("--upsample", type=click.IntRange(0, 3),
                     help="Instead: one search per photo, upsampled N times (finds smaller faces, 4x slower each time).")(f)
    f = click.option("--detector", type=click.Choice(("auto", *DETECTORS)), default="auto", show_default=True,
                     help="auto: cnn on the encoder's GPU when the encoder runs on CUDA, else hog. hog: fast on a CPU; "
                          "cnn: dlib's MMOD detector run in torch (dlib's boxes), finds more faces, slow on a CPU.")(f)
    return f


@main.command("build")
@click.argument("photos", type=click.Path(exists=True, path_type=Path))
@_gallery_option("-o")
@click.option("--model", type=str, default=_Later(".embed.encoders", "DEFAULT_MODEL"), show_default=True,
              help="Encoder: dlib-resnet (shipped; torch, batched, CPU or GPU), dlib-resnet-native (the same model run by dlib), "
                   "arcface-r18|r34|r50|r100:WEIGHTS.pth, or torchscript:FILE.pt.")
@click.option("--faces", type=_LaterChoice(".enrolment", "FACE_POLICIES"), default="largest", show_default=True,
              help="Photos with several faces: enrol the largest, all of them, or skip the photo (single).")
@click.option("--landmarks", type=click.Choice(["5", "68"]), help="Landmark model (default: what the model's chip needs).")
@_photo_options
@click.option("--device", help="Where the encoder runs: cpu, cuda, cuda:1 (default: a GPU when torch sees one).")
@click.option("--format", "shard_format", type=_LaterChoice(".store", "FORMATS"), default="parquet", show_default=True)
@click.option("--rows-per-shard", type=click.IntRange(min=1), default=_Later(".gallery", "DEFAULT_ROWS_PER_SHARD"), show_default=True)
@click.option("--index", "index_kind", type=_LaterChoice(".index", "KINDS"), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the gallery in the folder (it stays readable until done).")
@_group_access_option
@_wait_option
@_quiet_option
@_engine_options(sharded=False)
def build(photos, gallery_dir, model, faces, landmarks, detector, upsample, max_side, workers, device, shard_format,
          rows_per_shard, index_kind, overwrite, group_access, wait, quiet, engine, address) -> None:
    """Build a gallery from PHOTOS: a folder of <identity>/<images>, or a CSV with path,identity columns.

    \b
    Each photo's faces are found, aligned and encoded; corrupt files and photos without a face are
    reported and skipped. The outcome of every photo is written to report-<N>.json in the gallery.
    An interrupted build resumes when rerun. With --engine ray, encoding runs in Ray actors (one per
    GPU) and HOG detection in Ray tasks; the CNN detects in the encoder actors. The gallery written
    is the same. Example:
      gallery build photos/ && gallery query probe.jpg -k 5
    """
    from .gallery import Gallery

    g = Gallery.from_photos(photos, gallery_dir, model=model, faces=faces, detector=detector,
                            landmarks=int(landmarks) if landmarks else None, upsample=upsample, max_side=max_side,
                            workers=workers, device=device, overwrite=overwrite, index=index_kind,
                            shard_format=shard_format, rows_per_shard=rows_per_shard, progress=not quiet, engine=engine,
                            address=address, wait=wait, group_access=group_access)
    _print_enrolment(gallery_dir, g)


@main.command("add")
@click.argument("photos", type=click.Path(exists=True, path_type=Path))
@_gallery_option()
@click.option("--faces", type=_LaterChoice(".enrolment", "FACE_POLICIES"), default="largest", show_default=True)
@_photo_options
@click.option("--model", help="The gallery's encoder from another file path (its fingerprint must match).")
@click.option("--device", help="Where the encoder runs (default: a GPU when torch sees one).")
@_wait_option
@_quiet_option
@_engine_options(sharded=False)
def add(photos, gallery_dir, faces, detector, upsample, max_side, workers, model, device, wait, quiet, engine,
        address) -> None:
    """Enrol more photos (<identity>/<images> or a CSV) into an existing gallery, with its own model.

    New and existing identities alike; the index is extended, never rebuilt. An interrupted add
    resumes when rerun.
    """
    from .gallery import Gallery

    g = Gallery.open(gallery_dir, wait=wait)
    g.add_photos(photos, model=model, faces=faces, detector=detector, upsample=upsample, max_side=max_side,
                 workers=workers, device=device, progress=not quiet, engine=engine, address=address)
    _print_enrolment(gallery_dir, g)


def _print_enrolment(gallery_dir: Path, g: Gallery) -> None:
    from .enrolment import passed_over, summary_line

    report = g.last_report
    resumed = report["summary"].get("resumed", 0)
    click.echo(f"{gallery_dir}: {summary_line(report['summary'])}" + (f" ({resumed} from the interrupted run)" if resumed else ""))
    for reason, names in passed_over(report).items():
        click.echo(f"  {reason}: {first_names(names)}")
    report_file = gallery_dir / f"report-{report['generation']:06d}.json"
    click.echo(f"{gallery_dir}: {counted(len(g), 'record')}, {counted(len(g.identities), 'identity', 'identities')}, "
               f"model {g.model}; every photo's outcome in {report_file}")
    _warn_if_fallback(g)


def _warn_if_fallback(g: Gallery) -> None:
    """Say so on stderr when the gallery decides with the fallback threshold, and how to fix it."""
    provenance = g.threshold_provenance()
    if provenance["source"] == "fallback":
        click.echo(f"warning: {provenance['warning']}", err=True)


@main.command("query")
@click.argument("probes", nargs=-1, required=True)
@_gallery_option()
@click.option("-k", type=click.IntRange(min=1), default=5, show_default=True, help="Identities per face.")
@click.option("--threshold", type=float,
              help="Open-set threshold (cosine): a face is matched iff score >= T. Default: calibrated, else the model's.")
@_photo_options
@click.option("--device", help="Where the encoder runs (default: a GPU when torch sees one).")
@_json_options("photo")
@_quiet_option
@_engine_options(sharded=True)
def query(probes, gallery_dir, k, threshold, detector, upsample, max_side, workers, device, as_json, json_array, quiet,
          engine, address, shards) -> None:
    """Who is in each probe photo? PROBES are images, folders, glob patterns or text files listing images.

    For every face: its box (left, top, right, bottom in pixels), the top-k identities with cosine
    similarity scores, and the decision: the best identity if its score >= threshold, else unknown.
    Each photo's answer prints as soon as it is ready; a folder shows progress on stderr, and a
    summary naming the photos that could not be read or had no face. Exit status 1 when no probe
    photo could be read.
    """
    from .gallery import Gallery

    g = Gallery.open(gallery_dir, engine=engine, shards=shards, address=address)
    answers = g.iter_search_images(list(probes), k=k, threshold=threshold, detector=detector, upsample=upsample,
                                   max_side=max_side, workers=workers, device=device, progress=not quiet)
    tally, out = _ProbeTally(), _JsonOut(as_json, json_array)
    for photo in answers:
        tally.add(photo)
        if not out.write(photo.to_dict()):
            for line in _photo_lines(photo):
                echo(line)
    out.close()
    tally.finish(probes)


def _photo_lines(photo) -> list[str]:
    """The answer for one probe photo, as the table ``gallery query`` prints."""
    if photo.error:
        return [_photo_error(photo)]
    if not photo.faces:
        return [f"{photo.source}: no face found"]
    lines = [f"{photo.source}: {counted(len(photo.faces), 'face')}"]
    for i, face in enumerate(photo.faces, start=1):
        r = face.result
        decision = r.identity if r.identity is not None else "unknown"
        margin = f", margin {r.margin:.4f} over the next identity" if r.margin is not None else ""
        lines.append(f"  face {i} at {list(face.box)}: {decision}  (threshold {r.threshold:g}, "
                     f"{r.threshold_source}{margin})")
        for rank, m in enumerate(r.matches, start=1):
            mark = ">=" if m.score >= r.threshold else "< "
            score, threshold = _compared(m.score, r.threshold)
            photo = f"  (enrolled photo {m.sources[0]})" if m.sources and m.sources[0] else ""
            lines.append(f"    {rank}. {m.identity:<30} {score} {mark} {threshold}{photo}")
    return lines


def _photo_error(photo) -> str:
    """``a.jpg: not an image Pillow can read``: the photo's error, which names it already, named once."""
    return photo.error if photo.error.startswith(f"{photo.source}:") else f"{photo.source}: {photo.error}"


class _ProbeTally:
    """What became of the probe photos, for the summary on stderr and the exit status."""

    def __init__(self):
        self.photos, self.faces = 0, 0
        self.unreadable: list[str] = []
        self.faceless: list[str] = []

    def add(self, photo) -> None:
        self.photos += 1
        self.faces += len(photo.faces)
        if photo.error:
            self.unreadable.append(photo.source)
        elif not photo.faces:
            self.faceless.append(photo.source)

    def finish(self, probes) -> None:
        """Print the summary (for more than one photo) and fail when no photo could be read."""
        if self.photos == 0:
            raise click.ClickException(f"no probe photo found in {first_names(list(probes))}")
        parts = [counted(self.faces, "face")]
        if self.faceless:
            parts.append(f"no face found in {counted(len(self.faceless), 'photo')} ({first_names(self.faceless)})")
        if self.unreadable:
            parts.append(f"{counted(len(self.unreadable), 'photo')} unreadable ({first_names(self.unreadable)})")
        if len(self.unreadable) == self.photos:
            raise click.ClickException(f"no probe photo could be read: {'; '.join(parts[1:])}")
        if self.photos > 1:
            echo(f"{counted(self.photos, 'photo')}, {'; '.join(parts)}", err=True)


# ---------------------------------------------------------------------- serve and keys (gallery/serve)


def _key_roles() -> tuple[str, ...]:
    from .serve.keys import ROLES  # the key store needs no web stack

    return ROLES


def _keys_option(f):
    return click.option("--keys", "keys_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="API key file (default: GALLERY/api-keys.json).")(f)


@main.command("serve")
@_gallery_option()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the default is reachable from this machine only (see README: Serving).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@_keys_option
@click.option("--insecure-no-auth", is_flag=True, help="Serve without API keys: anyone who can connect may do anything.")
@click.option("--max-upload-mb", type=click.FloatRange(0, min_open=True), default=20, show_default=True,
              help="Largest request body.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=40_000_000, show_default=True,
              help="Largest photo, by the pixels its header declares (the decompression-bomb guard).")
@click.option("--max-photos", type=click.IntRange(min=1), default=32, show_default=True, help="Photos per request.")
@click.option("--max-k", type=click.IntRange(min=1), default=100, show_default=True, help="Largest k a search may ask for.")
@click.option("--access-log", is_flag=True, help="Log every request (method, path, status; never the key).")
def serve(gallery_dir, host, port, keys_path, insecure_no_auth, max_upload_mb, max_pixels, max_photos, max_k,
          access_log) -> None:
    """Serve the gallery over HTTP: search by photo or vector, enrol, remove, and a web page at /.

    \b
    Every request needs an API key (make one first), unless --insecure-no-auth:
      gallery keys create --role admin -g my-gallery
      gallery serve -g my-gallery --port 8000        # docs at http://127.0.0.1:8000/v1/docs
    Needs the serve extra: pip install 'gallery[serve]'.
    """
    from .serve import Limits, run_server

    limits = Limits(max_upload_bytes=int(max_upload_mb * (1 << 20)), max_pixels=max_pixels, max_photos=max_photos,
                    max_k=max_k)
    run_server(gallery_dir, host=host, port=port, keys_path=keys_path, insecure_no_auth=insecure_no_auth,
               limits=limits, access_log=access_log,
               on_listening=lambda url: click.echo(f"gallery serve: {gallery_dir} on {url} (page {url}/, docs {url}/v1/docs)"))


@main.group("keys")
def keys() -> None:
    """API keys for `gallery serve`: each has a role (search < enrol < admin); only its hash is stored."""


@keys.command("create")
@_gallery_option()
@_keys_option
@click.option("--role", type=click.Choice(_key_roles()), required=True,
              help="search: search and read; enrol: also enrol; admin: also remove, calibrate, manage keys.")
@click.option("--name", default="", help="Who or what the key is for.")
def keys_create(gallery_dir, keys_path, role, name) -> None:
    """Make an API key and print it, once: it cannot be shown again."""
    from .serve.keys import KeyStore, default_keys_path

    path = keys_path or default_keys_path(gallery_dir)
    token, key = KeyStore(path).create(role, name=name)
    click.echo(token)
    click.echo(f"key {key.id} ({key.role}) stored as a hash in {path}; this is the only time it is shown", err=True)


@keys.command("list")
@_gallery_option()
@_keys_option
def keys_list(gallery_dir, keys_path) -> None:
    """List the keys: id, role, name and when each was made (never the keys)."""
    import time

    from .serve.keys import KeyStore, default_keys_path

    for k in KeyStore(keys_path or default_keys_path(gallery_dir)).keys():
        click.echo(f"{k.id}  {k.role:<6}  {time.strftime('%Y-%m-%d %H:%M', time.localtime(k.created))}  {k.name}")


@keys.command("revoke")
@click.argument("key_id")
@_gallery_option()
@_keys_option
def keys_revoke(key_id, gallery_dir, keys_path) -> None:
    """Revoke the key KEY_ID: a running server refuses it from its next request."""
    from .serve.keys import KeyStore, default_keys_path

    key = KeyStore(keys_path or default_keys_path(gallery_dir)).revoke(key_id)
    click.echo(f"revoked key {key.id} ({key.role}) {key.name}".rstrip())


if __name__ == "__main__":  # pragma: no cover
    main()
