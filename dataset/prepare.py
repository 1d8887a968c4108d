"""Build the HW4P1 layout from the WikiText-2 token files.

    python -m dataset.prepare --out DIR [--wikitext DIR] [--fixtures-from valid|none] [--seed 0]

reads DIR/wiki.train.tokens and DIR/wiki.valid.tokens (or the same names + .xz, xz-compressed;
without --wikitext, the copies bundled with the package in dataset/wikitext2/) and writes

    OUT/dataset/vocab.npy        (V,) str: sorted(set(train words) | {'<eol>'}) + ['<sos>', '<eos>']
    OUT/dataset/wiki.train.npy   object array of int64 arrays, one per article
    OUT/dataset/wiki.valid.npy   the same for the validation split
    OUT/fixtures/*               prediction / generation fixtures cut from a held-out split
                                 (see fixtures.make; existing fixture files are kept)

The rules, checked against the course handout (tests/test_prepare.py):
- words are the whitespace-separated tokens of a line; '<eol>' follows every non-empty line
  (blank lines add nothing);
- an article starts at each title line: the tokens ``= w1 ... wk =`` with no '=' among the
  wi (section headings `` = = Section = = `` have) and k >= 2 words. One-word titles
  (`` = Sorraia = ``) do not start an article: that is the course's rule, which gives its 579
  training and 59 validation articles and reproduces its wiki.valid.npy exactly (the one
  one-word title there, `` = <unk> = ``, stays inside the article before it). The handout's
  wiki.train.npy was instead cut at all 629 title lines: ``--title-min-words 1`` does that.
  Either way the training ids are the same 2,075,677, only the cuts differ.

A user's mistake (no such folder, a missing or unreadable file, an output folder that cannot
be written) prints one line ``error: ...`` and exits with code 2, like every other command.
"""
import argparse
import lzma
import sys
from pathlib import Path

import numpy as np

from dataset.corpus import EOL, EOS, FIXTURE_FILES, SOS, DataError
from fixtures.make import make_fixtures

SPLITS = ("train", "valid")
BUNDLED_WIKITEXT = Path(__file__).resolve().parent / "wikitext2"  # the xz copies shipped with the package


def token_file(wikitext_dir, split):
    """DIR/wiki.{split}.tokens, or DIR/wiki.{split}.tokens.xz where only that exists."""
    plain = Path(wikitext_dir) / f"wiki.{split}.tokens"
    packed = plain.with_name(plain.name + ".xz")
    return packed if packed.is_file() and not plain.is_file() else plain


def read_lines(path):
    """The lines of a WikiText token file (split on '\\n' only, as written); a .xz file is decompressed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing WikiText-2 file: {path} (the --wikitext folder needs wiki.train.tokens "
                        "and wiki.valid.tokens, or the same names + .xz; leave --wikitext out to use the "
                        "copies bundled with the package)")
    opener = lzma.open if path.suffix == ".xz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            return f.read().split("\n")
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())
        raise DataError(f"cannot read {path}: {type(err).__name__}: {reason} (replace it with the "
                        "WikiText-2 v1 tokenized file of that name)") from err


def is_title(words, min_words=2):
    """True for an article title line ``= w1 ... wk =`` (k >= min_words, no '=' among the wi)."""
    return (len(words) >= 2 + min_words and words[0] == "=" and words[-1] == "="
            and "=" not in words[1:-1])


def split_articles(lines, min_title_words=2):
    """Articles as lists of words, '<eol>' after each non-empty line, cut at title lines."""
    articles, current = [], []
    for line in lines:
        words = line.split()
        if not words:
            continue
        if current and is_title(words, min_title_words):
            articles.append(current)
            current = []
        current += words
        current.append(EOL)
    if current:
        articles.append(current)
    return articles


def build_vocab(train_articles):
    """(V,) str array: sorted(set(train words) | {'<eol>'}) + ['<sos>', '<eos>']."""
    words = {EOL}
    for art in train_articles:
        words.update(art)
    return np.array(sorted(words) + [SOS, EOS])


def encode_articles(articles, index, source):
    """List of int64 arrays of shape (n_words,); a word missing from ``index`` is a DataError."""
    out = []
    for art in articles:
        try:
            out.append(np.fromiter((index[w] for w in art), dtype=np.int64, count=len(art)))
        except KeyError as err:
            raise DataError(f"{source}: word {err.args[0]!r} is not in the training vocabulary") from None
    return out


def save_articles(path, articles):
    """np.save an object array of int64 arrays (one per article)."""
    arr = np.empty(len(articles), dtype=object)
    for k, art in enumerate(articles):  # item by item, so equal lengths never make a 2-D array
        arr[k] = art
    np.save(path, arr, allow_pickle=True)


def prepare(wikitext_dir, out_dir, fixtures_from="valid", seed=0, min_title_words=2,
            overwrite_fixtures=False, log=print):
    """Write OUT/dataset/* and (unless fixtures_from='none') OUT/fixtures/*; return a summary dict.

    wikitext_dir holds wiki.{train,valid}.tokens, plain or .xz (see token_file), e.g.
    BUNDLED_WIKITEXT. A missing or unreadable input, or an output that cannot be written, is a
    DataError.
    """
    if fixtures_from not in ("valid", "none"):
        raise ValueError(f"fixtures_from must be 'valid' or 'none', got {fixtures_from!r}")
    if min_title_words < 1:
        raise ValueError(f"min_title_words must be >= 1, got {min_title_words}")
    wikitext_dir, out_dir = Path(wikitext_dir), Path(out_dir)
    if not wikitext_dir.is_dir():
        raise DataError(f"WikiText-2 directory not found: {wikitext_dir} (pass the folder of "
                        "wiki.train.tokens and wiki.valid.tokens, or leave --wikitext out to use the "
                        "copies bundled with the package)")
    paths = {s: token_file(wikitext_dir, s) for s in SPLITS}
    lines = {s: read_lines(paths[s]) for s in SPLITS}  # a missing file fails here, before any work
    words = {s: split_articles(lines[s], min_title_words) for s in SPLITS}

    vocab = build_vocab(words["train"])
    index = {w: i for i, w in enumerate(vocab.tolist())}
    ids = {s: encode_articles(words[s], index, paths[s]) for s in SPLITS}
    try:
        return _write(out_dir, vocab, ids, fixtures_from, seed, overwrite_fixtures, log)
    except OSError as err:
        where = err.filename or out_dir
        raise DataError(f"cannot write {where}: {err.strerror or err} (choose an output folder you can "
                        "write to)") from err


def _write(out_dir, vocab, ids, fixtures_from, seed, overwrite_fixtures, log):
    """prepare's output: OUT/dataset/* and OUT/fixtures/* (OSError on a write failure)."""
    ddir = out_dir / "dataset"
    ddir.mkdir(parents=True, exist_ok=True)
    np.save(ddir / "vocab.npy", vocab)
    for s in SPLITS:
        save_articles(ddir / f"wiki.{s}.npy", ids[s])
    summary = {"vocab": len(vocab)}
    for s in SPLITS:
        summary[s] = (len(ids[s]), int(sum(a.size for a in ids[s])))
        log(f"{s}: {summary[s][0]} articles, {summary[s][1]} ids -> {ddir / f'wiki.{s}.npy'}")
    log(f"vocab: {len(vocab)} words -> {ddir / 'vocab.npy'}")

    summary["fixtures"] = None
    if fixtures_from != "none":
        fdir = out_dir / "fixtures"
        present = [n for n in FIXTURE_FILES if (fdir / n).exists()]
        if present and not overwrite_fixtures:
            log(f"fixtures: kept the existing {', '.join(present)} in {fdir} "
                "(--overwrite-fixtures replaces them)")
        else:
            sos_id = vocab.tolist().index(SOS)
            summary["fixtures"] = make_fixtures(ids[fixtures_from], sos_id, seed, fdir)
            log(f"fixtures: cut from the {fixtures_from} split with seed {seed} -> {fdir}")
    return summary


def main(argv=None):
    """The command line; returns the exit code (0, or 2 after one line `error: ...` on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m dataset.prepare", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--wikitext", default=str(BUNDLED_WIKITEXT),
                        help="folder of wiki.train.tokens and wiki.valid.tokens, plain or .xz "
                             "(default: the copies bundled with the package)")
    parser.add_argument("--out", required=True, help="output root: writes OUT/dataset and OUT/fixtures")
    parser.add_argument("--fixtures-from", choices=["valid", "none"], default="valid",
                        help="split to cut the fixtures from, or none (default: valid)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the fixtures (default: 0)")
    parser.add_argument("--title-min-words", type=int, default=2,
                        help="words a title needs to start an article (2: the course's cuts; 1: every title)")
    parser.add_argument("--overwrite-fixtures", action="store_true", help="replace existing fixture files")
    args = parser.parse_args(argv)
    if args.title_min_words < 1:
        parser.error(f"--title-min-words must be >= 1, got {args.title_min_words}")
    return run_command(lambda: prepare(args.wikitext, args.out, args.fixtures_from, args.seed,
                                       args.title_min_words, args.overwrite_fixtures))


def run_command(work):
    """work() -> exit code 0; a DataError (the user's folder or file) is one `error:` line, exit 2."""
    try:
        work()
    except DataError as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
