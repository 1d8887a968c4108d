"""The HW4P1 layout built from the WikiText-2 text that comes with the package, cached on first use.

    hw4p1_dir(cache_dir=None, log=print) -> Path    a folder load_hw4p1 and load_fixtures read
    python -m dataset.bundled [--cache-dir DIR]      build it if needed, print its path
    python -m dataset.bundled --rewrite-from DIR     rewrite dataset/wikitext2/*.xz from a WikiText-2 folder

dataset/wikitext2/ holds wiki.train.tokens.xz and wiki.valid.tokens.xz (WikiText-2 v1, CC BY-SA
3.0: see LICENSE.md there; no test split). The first call runs dataset.prepare on them (the
course's vocabulary and article cuts; fixtures cut from the validation split with seed 0) into

    CACHE/wikitext2-hw4p1-<digest>/dataset/{vocab,wiki.train,wiki.valid}.npy
    CACHE/wikitext2-hw4p1-<digest>/fixtures/{prediction,prediction_test}.npz, generation{,_test}.npy

CACHE is cache_dir if given, else $MYTORCH_DATA, else $XDG_CACHE_HOME/mytorch (~/.cache/mytorch).
<digest> is 12 hex digits of a sha256 over the bundled files and the recipe, so a changed
bundle or recipe builds a fresh folder instead of reusing a stale one.

The build writes into a temporary sibling (.wikitext2-hw4p1-<digest>.tmp-*) and renames it into
place at the end, so a folder with the final name is always complete. A killed build leaves only
the temporary folder: it is ignored, and removed once it is an hour old. When two processes build
at once, the second rename finds the folder already there and uses it.
"""
import argparse
import hashlib
import lzma
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

from dataset.corpus import FIXTURE_FILES, DataError
from dataset.prepare import BUNDLED_WIKITEXT, SPLITS, prepare, run_command

ENV = "MYTORCH_DATA"
NAME = "wikitext2-hw4p1"
BUNDLED_FILES = tuple(f"wiki.{s}.tokens.xz" for s in SPLITS)
# Part of the digest: change it when dataset.prepare's output for the same text changes.
RECIPE = b"hw4p1 layout v1: dataset.prepare defaults (titles of >= 2 words, fixtures from valid, seed 0)"
LAYOUT_FILES = (("dataset/vocab.npy", "dataset/wiki.train.npy", "dataset/wiki.valid.npy")
                + tuple(f"fixtures/{n}" for n in FIXTURE_FILES))
STALE_S = 3600   # a temporary folder this old is a killed build's: removed
BUILD_S = 3      # about how long a build takes (1.4-1.8 s measured on 2 busy cores), for the log line
WHAT_TO_DO = (f"set {ENV} to a folder you can write to, or pass --data DIR with an HW4P1 folder "
              "(see python -m dataset.prepare)")


def cache_root(cache_dir=None):
    """cache_dir, else $MYTORCH_DATA, else $XDG_CACHE_HOME/mytorch, else ~/.cache/mytorch."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mytorch"


def bundle_digest(bundle_dir=BUNDLED_WIKITEXT):
    """12 hex digits of a sha256 over RECIPE and the bundled files (names, sizes, bytes)."""
    h = hashlib.sha256(RECIPE)
    for name in BUNDLED_FILES:
        path = Path(bundle_dir) / name
        try:
            data = path.read_bytes()
        except OSError as err:
            raise DataError(f"the bundled WikiText-2 file {path} is missing or unreadable ({err.strerror}): "
                            "reinstall the package, or pass --data DIR with an HW4P1 folder") from err
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:12]


def is_complete(folder):
    """True when folder holds every file of the HW4P1 layout."""
    return all((Path(folder) / f).is_file() for f in LAYOUT_FILES)


def hw4p1_dir(cache_dir=None, log=print, bundle_dir=None):
    """The cached HW4P1 folder for the bundled WikiText-2, built on first use (about BUILD_S s).

    cache_dir: where the folder lives (default: see cache_root). log: gets one line when a build
    starts. bundle_dir: a folder of wiki.{train,valid}.tokens.xz to build from instead of the
    bundled one (tests use a tiny one). A cache that cannot be written is a DataError naming it.
    """
    bundle_dir = BUNDLED_WIKITEXT if bundle_dir is None else Path(bundle_dir)
    root = cache_root(cache_dir)
    target = root / f"{NAME}-{bundle_digest(bundle_dir)}"
    if not target.is_dir():
        _build(bundle_dir, target, log)
    elif not is_complete(target):
        missing = next(f for f in LAYOUT_FILES if not (target / f).is_file())
        raise DataError(f"the data cache {target} is incomplete (no {missing}): delete that folder "
                        "and run again to rebuild it")
    remove_stale(root)
    return target


def _build(bundle_dir, target, log):
    """prepare() into a temporary sibling of target, then rename it to target."""
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()  # (mkdtemp would make it private: mode 0700)
    except OSError as err:
        raise DataError(f"cannot write the data cache {root}: {err.strerror or err} ({WHAT_TO_DO})") from err
    source = "the bundled WikiText-2" if bundle_dir == BUNDLED_WIKITEXT else str(bundle_dir)
    log(f"building the HW4P1 layout from {source} into {target} (once, ~{BUILD_S} s)")
    try:
        prepare(bundle_dir, tmp, log=lambda *a: None)
        if (bundle_dir / "LICENSE.md").is_file():  # the derived files carry the text's licence
            shutil.copyfile(bundle_dir / "LICENSE.md", tmp / "LICENSE.md")
        (tmp / "SOURCE.txt").write_text(
            f"Built by dataset.bundled (mytorch) from {', '.join(BUNDLED_FILES)} in {bundle_dir}\n"
            f"(bundle digest {target.name.rsplit('-', 1)[1]}) with: {RECIPE.decode()}.\n"
            "The fixtures are cut from the validation split, not the course's (those came from the\n"
            "test split, which is not shipped). WikiText-2 is CC BY-SA 3.0: see LICENSE.md.\n",
            encoding="utf-8")
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target):  # else another process finished first: use its folder
                raise
    except OSError as err:
        reason = err.strerror or err
        raise DataError(f"cannot write the data cache {target}: {reason} ({WHAT_TO_DO})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def remove_stale(root, max_age_s=STALE_S):
    """Remove the temporary build folders in root older than max_age_s (killed builds); return them."""
    removed = []
    try:
        entries = [p for p in Path(root).iterdir() if p.name.startswith(f".{NAME}-") and ".tmp-" in p.name]
    except OSError:
        return removed
    for path in entries:
        try:
            old = time.time() - path.stat().st_mtime > max_age_s
        except OSError:
            continue
        if old:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def rewrite_bundle(wikitext_dir, bundle_dir=BUNDLED_WIKITEXT, log=print):
    """Write bundle_dir/wiki.{train,valid}.tokens.xz from wikitext_dir's plain files (xz preset 9)."""
    for split in SPLITS:
        src = Path(wikitext_dir) / f"wiki.{split}.tokens"
        dst = Path(bundle_dir) / f"wiki.{split}.tokens.xz"
        try:
            raw = src.read_bytes()
            packed = lzma.compress(raw, preset=9)
            tmp = dst.with_name(dst.name + ".tmp")
            tmp.write_bytes(packed)
            os.replace(tmp, dst)
        except OSError as err:
            raise DataError(f"cannot rewrite {dst} from {src}: {err.strerror or err} (the folder needs "
                            "wiki.train.tokens and wiki.valid.tokens)") from err
        log(f"{src} ({len(raw):,} bytes, sha256 {hashlib.sha256(raw).hexdigest()[:16]}...) "
            f"-> {dst} ({len(packed):,} bytes)")


def main(argv=None):
    """The command line; returns the exit code (0, or 2 after one line `error: ...` on stderr)."""
    p = argparse.ArgumentParser(prog="python -m dataset.bundled", description=__doc__.split("\n")[0],
                                allow_abbrev=False)
    p.add_argument("--cache-dir", help=f"cache folder (default: ${ENV}, else $XDG_CACHE_HOME/mytorch, "
                                       "else ~/.cache/mytorch)")
    p.add_argument("--rewrite-from", metavar="DIR",
                   help="instead: rewrite the bundled .xz files from DIR/wiki.{train,valid}.tokens")
    args = p.parse_args(argv)
    if args.rewrite_from:
        return run_command(lambda: rewrite_bundle(args.rewrite_from))
    # the path alone on stdout: --data "$(python -m dataset.bundled)"
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    return run_command(lambda: print(hw4p1_dir(args.cache_dir, log=log)))


if __name__ == "__main__":
    sys.exit(main())
