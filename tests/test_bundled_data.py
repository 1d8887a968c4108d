"""dataset.bundled: the WikiText-2 text shipped with the package and the HW4P1 folder built from it.

The real bundle is built once per session (about 2 s); the cache's mechanics (reuse, leftovers
of a killed build, two builders at once, errors) run on a tiny bundle made here.
"""
import lzma
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dataset import DataError, Vocabulary, fingerprint, load_fixtures, load_hw4p1
from dataset import bundled
from dataset.prepare import BUNDLED_WIKITEXT, prepare
from tinydata import wikitext_text

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(log=lambda *a: None)


# ----------------------------------------------------------------------------- the shipped files

def test_bundled_files_decompress_and_carry_their_licence():
    names = sorted(p.name for p in BUNDLED_WIKITEXT.iterdir())
    assert names == ["LICENSE.md", "wiki.train.tokens.xz", "wiki.valid.tokens.xz"]  # no test split
    sizes = {name: len(lzma.decompress((BUNDLED_WIKITEXT / name).read_bytes()))
             for name in bundled.BUNDLED_FILES}
    assert sizes == {"wiki.train.tokens.xz": 10_797_148, "wiki.valid.tokens.xz": 1_121_681}
    licence = (BUNDLED_WIKITEXT / "LICENSE.md").read_text(encoding="utf-8")
    for phrase in ("CC BY-SA 3.0", "https://creativecommons.org/licenses/by-sa/3.0/", "Stephen Merity",
                   "Caiming Xiong", "James Bradbury", "Richard Socher", "Pointer Sentinel Mixture Models",
                   "2016", "Salesforce", "Wikipedia", "wikitext-2-v1",
                   "python -m dataset.bundled --rewrite-from"):
        assert phrase in licence, phrase


@pytest.mark.data
@pytest.mark.parametrize("split", ["train", "valid"])
def test_bundled_files_equal_the_shared_wikitext_byte_for_byte(wikitext_dir, split):
    packed = (BUNDLED_WIKITEXT / f"wiki.{split}.tokens.xz").read_bytes()
    assert lzma.decompress(packed) == (wikitext_dir / f"wiki.{split}.tokens").read_bytes()


def test_setup_cfg_and_manifest_ship_the_bundle():
    """The wheel's package_data and the sdist's MANIFEST.in both name the .xz files and the licence.
    (A wheel built with `pip wheel . --no-deps` holds dataset/wikitext2/{LICENSE.md,*.xz}.)"""
    cfg = (ROOT / "setup.cfg").read_text()
    section = cfg.split("[options.package_data]")[1].split("\n[")[0]
    assert "wikitext2/*.xz" in section and "wikitext2/LICENSE*" in section
    manifest = (ROOT / "MANIFEST.in").read_text()
    assert "recursive-include dataset/wikitext2 *.xz LICENSE*" in manifest


# ----------------------------------------------------------------------------- the real build

@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """hw4p1_dir() on the real bundle, once: (folder, the lines it logged, seconds)."""
    cache, lines = tmp_path_factory.mktemp("cache"), []
    start = time.perf_counter()
    folder = bundled.hw4p1_dir(cache, log=lines.append)
    return folder, lines, time.perf_counter() - start


@pytest.fixture(scope="session")
def built_data(built):
    return load_hw4p1(built[0])


def test_build_logs_one_line_and_makes_a_loadable_layout(built, built_data):
    folder, lines, _ = built
    assert folder.name == f"wikitext2-hw4p1-{bundled.bundle_digest()}"
    assert re.fullmatch("wikitext2-hw4p1-[0-9a-f]{12}", folder.name)
    assert len(lines) == 1
    assert lines[0].startswith("building the HW4P1 layout from the bundled WikiText-2 into")
    assert str(folder) in lines[0]
    data = built_data
    assert data.vocab.shape == (33280,) and data.vocab[-2:].tolist() == ["<sos>", "<eos>"]
    assert len(data.train) == 579 and sum(a.size for a in data.train) == 2_075_677
    assert len(data.valid) == 59 and sum(a.size for a in data.valid) == 216_347
    fx = load_fixtures(folder)
    assert {k: v.shape for k, v in fx.items()} == {
        "prediction_inp": (128, 21), "prediction_out": (128,), "prediction_test_inp": (128, 21),
        "generation": (32, 21), "generation_test": (128, 31)}
    assert (fx["generation"][:, 0] == Vocabulary(data.vocab).sos_id).all()
    assert "CC BY-SA 3.0" in (folder / "LICENSE.md").read_text(encoding="utf-8")
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left


@pytest.mark.data
def test_build_equals_the_course_handout(built_data, hw4p1_dir):
    handout = load_hw4p1(hw4p1_dir)
    np.testing.assert_array_equal(built_data.vocab, handout.vocab)
    assert len(built_data.valid) == len(handout.valid)
    for ours, theirs in zip(built_data.valid, handout.valid):
        np.testing.assert_array_equal(ours, theirs)


def test_second_call_reuses_the_folder(built, monkeypatch):
    folder, _, _ = built
    stamp = (folder / "dataset" / "vocab.npy").stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt a cached folder")

    monkeypatch.setattr(bundled, "prepare", no_rebuild)
    lines = []
    assert bundled.hw4p1_dir(folder.parent, log=lines.append) == folder
    assert lines == [] and (folder / "dataset" / "vocab.npy").stat().st_mtime_ns == stamp


# ----------------------------------------------------------------------------- the cache, on a tiny bundle

@pytest.fixture
def tiny(tmp_path):
    """A tiny bundle folder (wiki.{train,valid}.tokens.xz + LICENSE.md) and an empty cache folder."""
    src = tmp_path / "bundle"
    src.mkdir()
    texts = {"train": wikitext_text(3, 12, 0), "valid": wikitext_text(3, 40, 1)}
    for split, text in texts.items():
        (src / f"wiki.{split}.tokens.xz").write_bytes(lzma.compress(text.encode("utf-8")))
    (src / "LICENSE.md").write_text("CC BY-SA 3.0 (test)\n")
    return src, tmp_path / "cache"


def test_tiny_build_equals_prepare_on_the_plain_text(tiny, tmp_path):
    src, cache = tiny
    folder = bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)
    plain = tmp_path / "plain"
    plain.mkdir()
    for split in ("train", "valid"):
        packed = (src / f"wiki.{split}.tokens.xz").read_bytes()
        (plain / f"wiki.{split}.tokens").write_bytes(lzma.decompress(packed))
    prepare(plain, tmp_path / "ref", **QUIET)
    assert fingerprint(load_hw4p1(folder)) == fingerprint(load_hw4p1(tmp_path / "ref"))
    ours, ref = load_fixtures(folder), load_fixtures(tmp_path / "ref")
    for key in ref:
        np.testing.assert_array_equal(ours[key], ref[key])


def leftover(cache, name, age_s):
    """A killed build's temporary folder (a half-written vocab.npy), last touched age_s ago."""
    path = cache / f".{name}.tmp-99999-deadbeef"
    (path / "dataset").mkdir(parents=True)
    (path / "dataset" / "vocab.npy").write_bytes(b"\x93NUMPY half")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_a_killed_builds_leftover_is_ignored_then_removed(tiny):
    src, cache = tiny
    name = f"wikitext2-hw4p1-{bundled.bundle_digest(src)}"
    old, fresh = leftover(cache, name, age_s=2 * bundled.STALE_S), leftover(cache, name + "x", age_s=0)
    folder = bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)
    assert folder.name == name and bundled.is_complete(folder)
    load_hw4p1(folder)
    assert not old.exists()  # an hour old: a killed build's, removed
    assert fresh.exists()    # may be another process's build in progress: left alone


def test_two_builders_at_once_both_end_with_the_folder(tiny, monkeypatch):
    """The other process renames its folder into place first; this one's rename then fails, and it
    uses that folder."""
    src, cache = tiny
    real_prepare = bundled.prepare

    def racing(wikitext_dir, out_dir, **kwargs):
        monkeypatch.setattr(bundled, "prepare", real_prepare)
        other = bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)  # the other process, finishing first
        (other / "built-by-the-other").touch()
        return real_prepare(wikitext_dir, out_dir, **kwargs)

    monkeypatch.setattr(bundled, "prepare", racing)
    folder = bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)
    assert (folder / "built-by-the-other").exists()
    assert [p.name for p in cache.iterdir()] == [folder.name]  # our temporary folder is gone


def test_two_processes_at_once(tiny):
    src, cache = tiny
    code = ("import sys; from dataset.bundled import hw4p1_dir; "
            "print(hw4p1_dir(sys.argv[1], log=lambda *a: None, bundle_dir=sys.argv[2]))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(cache), str(src)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    folder = Path(outs[0][0].strip())
    assert bundled.is_complete(folder) and [p.name for p in cache.iterdir()] == [folder.name]


def test_a_failed_build_leaves_nothing(tiny, monkeypatch):
    src, cache = tiny

    def broken(wikitext_dir, out_dir, **kwargs):
        (Path(out_dir) / "dataset").mkdir()
        raise DataError("disk on fire")

    monkeypatch.setattr(bundled, "prepare", broken)
    with pytest.raises(DataError, match="disk on fire"):
        bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)
    assert list(cache.iterdir()) == []


def test_an_unwritable_cache_names_the_folder_and_the_variable(tiny, tmp_path):
    src, _ = tiny
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError) as err:
        bundled.hw4p1_dir(blocker / "cache", bundle_dir=src, **QUIET)
    msg = str(err.value)
    assert f"cannot write the data cache {blocker / 'cache'}" in msg and "MYTORCH_DATA" in msg
    assert "\n" not in msg


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_a_read_only_cache(tiny, tmp_path):
    src, _ = tiny
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataError, match=f"cannot write the data cache {ro}.*MYTORCH_DATA"):
            bundled.hw4p1_dir(ro, bundle_dir=src, **QUIET)
    finally:
        ro.chmod(0o755)


def test_an_incomplete_cached_folder_says_to_delete_it(tiny):
    src, cache = tiny
    folder = bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)
    (folder / "fixtures" / "generation.npy").unlink()
    with pytest.raises(DataError, match=f"{folder} is incomplete .*generation.npy.*delete that folder"):
        bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)


def test_a_changed_bundle_gets_a_new_folder(tiny):
    src, cache = tiny
    first = bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)
    text = wikitext_text(3, 12, 0) + " more words here . \n"
    (src / "wiki.train.tokens.xz").write_bytes(lzma.compress(text.encode("utf-8")))
    second = bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)
    assert second != first and bundled.is_complete(first) and bundled.is_complete(second)
    assert fingerprint(load_hw4p1(first)) != fingerprint(load_hw4p1(second))


def test_a_missing_bundle_file_is_a_data_error(tiny):
    src, cache = tiny
    (src / "wiki.valid.tokens.xz").unlink()
    with pytest.raises(DataError, match=r"wiki\.valid\.tokens\.xz is missing.*reinstall"):
        bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET)


def test_cache_location_rules(tiny, tmp_path, monkeypatch):
    src, _ = tiny
    for var in ("MYTORCH_DATA", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert bundled.cache_root() == tmp_path / "home" / ".cache" / "mytorch"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bundled.cache_root() == tmp_path / "xdg" / "mytorch"
    monkeypatch.setenv("MYTORCH_DATA", str(tmp_path / "mine"))
    assert bundled.cache_root() == tmp_path / "mine"
    assert bundled.cache_root(tmp_path / "given") == tmp_path / "given"
    folder = bundled.hw4p1_dir(bundle_dir=src, **QUIET)  # MYTORCH_DATA honoured
    assert folder.parent == tmp_path / "mine" and bundled.is_complete(folder)


def test_command_line(tiny, capsys, monkeypatch, tmp_path):
    src, cache = tiny
    monkeypatch.setattr(bundled, "BUNDLED_WIKITEXT", src)  # the default bundle, for main()
    assert bundled.main(["--cache-dir", str(cache)]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(bundled.hw4p1_dir(cache, bundle_dir=src, **QUIET))
    assert out.err.startswith("building the HW4P1 layout")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert bundled.main(["--cache-dir", str(blocker / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the data cache") and err.count("\n") == 1


def test_rewrite_bundle_round_trips(tmp_path):
    plain, out = tmp_path / "plain", tmp_path / "out"
    plain.mkdir()
    out.mkdir()
    texts = {"train": "  = A B = \n a b . \n", "valid": " = A B = \n b a . \n"}
    for split, text in texts.items():
        (plain / f"wiki.{split}.tokens").write_text(text, encoding="utf-8")
    lines = []
    bundled.rewrite_bundle(plain, out, log=lines.append)
    assert len(lines) == 2
    for split, text in texts.items():
        assert lzma.decompress((out / f"wiki.{split}.tokens.xz").read_bytes()).decode("utf-8") == text
    with pytest.raises(DataError, match="cannot rewrite"):
        bundled.rewrite_bundle(tmp_path / "nowhere", out, **QUIET)
