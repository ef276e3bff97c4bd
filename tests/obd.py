"""The Open Bandit Dataset sample, the real file: ``obp/dataset/obd/random/all/all.csv`` from the
``obp`` 0.5.7 source archive (10,000 rows, one per displayed item, positions numbered 1..3).

The archive is fetched once with ``pip download`` (the package registry, as CI reaches it), checked
against the hash recorded below, and cached in $RECSYS_RL_TEST_CACHE (default
~/.cache/recsys-rl-tests); the sample directory is extracted next to it. Without network access the
tests that need it skip, saying why; a cached archive with another hash is an error, never used.
"""

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

OBP_VERSION = "0.5.7"
OBP_SDIST = f"obp-{OBP_VERSION}.tar.gz"
OBP_SDIST_SHA256 = "3060d67fedfcfadf1e7a6f2608987f74412b5eb74d2c567edeb147595c68f2a0"
SAMPLE_DIR = f"obp-{OBP_VERSION}/obp/dataset/obd/random/all"
SAMPLE_FILES = ("all.csv", "item_context.csv")
SAMPLE_SHA256 = "7168295b6e0a9eabcf3392320a5dd434e542b68e705d5cd9491499af589812f1"  # all.csv


def _unavailable(why: str) -> None:
    """No sample, no pass: the tests fail unless the user says the package index is out of reach
    (RECSYS_RL_TESTS_OFFLINE=1), in which case they skip with the reason."""
    if os.environ.get("RECSYS_RL_TESTS_OFFLINE") == "1":
        pytest.skip(f"the Open Bandit sample: {why} (RECSYS_RL_TESTS_OFFLINE=1)")
    pytest.fail(f"the Open Bandit sample: {why}; set RECSYS_RL_TESTS_OFFLINE=1 to skip these tests offline")


def cache_dir() -> Path:
    return Path(os.environ.get("RECSYS_RL_TEST_CACHE") or Path.home() / ".cache" / "recsys-rl-tests")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _download(cache: Path) -> Path:
    """The sdist in ``cache``, downloaded into a temporary directory and moved in whole when complete."""
    archive = cache / OBP_SDIST
    if archive.is_file():
        return archive
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"obp=={OBP_VERSION}", "--no-deps"]
        cmd += ["--no-binary", ":all:", "--ignore-requires-python", "--disable-pip-version-check", "-d", tmp]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            _unavailable(f"`pip download obp=={OBP_VERSION}` timed out")
        got = Path(tmp) / OBP_SDIST
        if r.returncode != 0 or not got.is_file():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            _unavailable(f"`pip download obp=={OBP_VERSION}` failed: {last}")
        os.replace(got, archive)
    return archive


def open_bandit_sample() -> Path:
    """Path of the real ``all.csv`` (``item_context.csv`` beside it), downloading the archive on first use."""
    cache = cache_dir()
    target = cache / SAMPLE_DIR
    if not all((target / f).is_file() for f in SAMPLE_FILES):
        archive = _download(cache)
        digest = _sha256(archive)
        if digest != OBP_SDIST_SHA256:
            raise AssertionError(
                f"{archive}: sha256 {digest}, expected {OBP_SDIST_SHA256}; delete it to fetch it again"
            )
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            for name in SAMPLE_FILES:
                data = tar.extractfile(f"{SAMPLE_DIR}/{name}").read()
                part = target / f"{name}.part"
                part.write_bytes(data)
                os.replace(part, target / name)
    sample = target / "all.csv"
    digest = _sha256(sample)
    if digest != SAMPLE_SHA256:
        raise AssertionError(
            f"{sample}: sha256 {digest}, expected {SAMPLE_SHA256}; delete it to extract it again"
        )
    return sample
