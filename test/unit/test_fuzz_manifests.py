"""Thousands of mutated manifests of both formats: each is refused with problems or loads; none raises anything else."""

from __future__ import annotations

import copy
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from testlib import TEST_STAGE, Library

from osbuild import formats
from osbuild.errors import UserError
from osbuild.meta import Index

MUTATIONS = 2500
DATA = b"inline\n"
CHECKSUM = "sha256:" + hashlib.sha256(DATA).hexdigest()
# Values a mutation puts anywhere: every JSON type, names the formats give meaning to, and edge cases.
VALUES: list[Any] = [None, True, 0, -1, 1.5, 2**64, "", "x", "2", "name:os", "name:", "../..", "/", "\u00e9\x00",
                     [], [None], {}, {"type": "org.osbuild.tree"}, CHECKSUM, "org.osbuild.noop", "org.osbuild.loopback",
                     {"id": "name:os"}, {"file": "/etc/hostname"}, {"encoding": "lzma+base64", "data": "AAAA"}]


def format2_seed() -> dict[str, Any]:
    tree = {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:os"]}
    files = {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": {CHECKSUM: {}}}
    one = {"type": "org.osbuild.files", "origin": "org.osbuild.pipeline",
           "references": [{"id": "name:os", "options": {"file": "/etc/hostname"}}]}
    return {
        "version": "2",
        "sources": {"org.osbuild.inline": {"items": {CHECKSUM: {"encoding": "base64", "data": "aW5saW5lCg=="}}},
                    "org.osbuild.curl": {"items": {"sha256:" + "1" * 64: "http://example.org/x",
                                                   "md5:" + "2" * 32: {"url": "http://example.org/y", "insecure": True}}}},
        "pipelines": [
            {"name": "build", "runner": "org.osbuild.linux", "stages": [{"type": "org.osbuild.noop", "options": {"a": 1}}]},
            {"name": "os", "build": "name:build", "source-epoch": 1, "stages": [
                {"type": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}}]},
            {"name": "image", "build": "name:build", "stages": [{
                "type": "org.osbuild.noop", "options": {},
                "inputs": {"tree": tree, "files": files, "one": one},
                "devices": {"disk": {"type": "org.osbuild.loopback", "options": {"filename": "disk.img", "start": 1}}},
                "mounts": [{"name": "root", "type": "org.osbuild.ext4", "source": "disk", "target": "/"},
                           {"name": "bind", "type": "org.osbuild.bind", "target": "tree://", "options": {"source": "mount://"}}],
            }]},
        ],
        "metadata": {"generators": [{"name": "fuzz"}]},
    }


def format1_seed() -> dict[str, Any]:
    return {
        "pipeline": {
            "build": {"pipeline": {"stages": [{"name": "org.osbuild.noop", "options": {"tools": True}}]},
                      "runner": "org.osbuild.linux"},
            "source-epoch": 1,
            "stages": [{"name": "org.osbuild.mkdir", "options": {"paths": [{"path": "/etc"}]}},
                       {"name": "org.osbuild.noop", "options": {"files": [CHECKSUM]}}],
            "assembler": {"name": "org.osbuild.noop", "options": {}},
        },
        "sources": {"org.osbuild.files": {"urls": {CHECKSUM: "http://example.org/x"}}},
    }


def seeds() -> list[Any]:
    """Manifests that load, and the samples: the Debian ones need locking first (their mutations try
    validation), the Fedora ones load as they are."""
    samples = [json.loads((REPO / "samples" / name).read_text())
               for name in ("debian-bookworm-qcow2.json", "debian-bookworm-v2.json", "fedora-30-qcow2.json",
                            "fedora-30-v2.json")]
    return [format2_seed(), format1_seed(), *samples]


def places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node inside value."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += places(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += places(item, (*path, i))
    return found


def mutate(manifest: Any, rng: random.Random) -> Any:
    result = copy.deepcopy(manifest)
    for _ in range(rng.randint(1, 3)):
        paths = places(result)
        path = rng.choice(paths)
        if not path:
            continue
        parent = result
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        action = rng.randrange(5)
        if action == 0:
            del parent[key]
        elif action == 1:
            parent[key] = copy.deepcopy(rng.choice(VALUES))
        elif action == 2:   # a node from elsewhere in the manifest
            source = result
            for part in rng.choice(paths):
                source = source[part]
            parent[key] = copy.deepcopy(source)
        elif action == 3 and isinstance(parent, dict):
            parent[rng.choice(["name", "type", "build", "references", "options", "x", "parent", "source"])] = parent.pop(key)
        elif isinstance(parent[key], list):
            parent[key].append(copy.deepcopy(rng.choice(VALUES)))
        elif isinstance(parent[key], dict):
            parent[key][rng.choice(["name", "type", "id", "x", "partition", "stages"])] = copy.deepcopy(rng.choice(VALUES))
    return result


def check(index: Index, manifest: Any) -> str:
    """What happened to one manifest: refused, invalid, or loaded (and described, with ids)."""
    try:
        fmt = formats.detect(manifest, "fuzz")
    except UserError:
        return "refused"
    if fmt.validate(manifest, index):
        return "invalid"
    loaded = fmt.load(manifest, index)
    json.dumps(fmt.describe(loaded, with_id=True))
    assert all(stage.id for _, stage in loaded.stages())
    return "loaded"


def test_the_seeds_load() -> None:
    index = Index(str(REPO))
    assert [check(index, seed) for seed in seeds()] == ["loaded", "loaded", "invalid", "invalid", "loaded", "loaded"]


@pytest.mark.parametrize("seed", [0, 1])
def test_mutated_manifests_raise_nothing_unexpected(seed: int) -> None:
    index = Index(str(REPO))
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    originals = seeds()
    for i in range(MUTATIONS):
        manifest = mutate(originals[i % len(originals)], rng)
        try:
            outcome = check(index, manifest)
        except Exception as e:
            raise AssertionError(f"{type(e).__name__}: {e} on manifest:\n{json.dumps(manifest)[:4000]}") from e
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # The mutations reach every outcome: the test exercises validation, not only the JSON parser.
    assert outcomes.get("invalid", 0) > MUTATIONS // 4 and outcomes.get("loaded", 0) > MUTATIONS // 20, outcomes


def buildable_seed() -> dict[str, Any]:
    """A format-2 manifest of test stages that builds anywhere: a tree, an empty pipeline, and one reading both."""
    return {"version": "2",
            "sources": {"org.osbuild.inline": {"items": {CHECKSUM: {"encoding": "base64", "data": "aW5saW5lCg=="}}}},
            "pipelines": [
                {"name": "os", "stages": [{"type": TEST_STAGE, "options": {"files": {"/etc/hostname": "x"}}}]},
                {"name": "empty"},
                {"name": "image", "stages": [{"type": TEST_STAGE, "options": {}, "inputs": {
                    "tree": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:os"]},
                    "empty": {"type": "org.osbuild.tree", "origin": "org.osbuild.pipeline", "references": ["name:empty"]},
                    "files": {"type": "org.osbuild.files", "origin": "org.osbuild.source", "references": [CHECKSUM]},
                    "one": {"type": "org.osbuild.files", "origin": "org.osbuild.pipeline",
                            "references": {"name:os": {"file": "/etc/hostname"}}}}}]}]}


def test_a_few_valid_mutations_build_or_fail_in_words(lib: Library, tmp_path: Path) -> None:
    """Mutations that validate go through real builds: success or a failure in one message, never a traceback."""
    lib.use_sources("org.osbuild.inline")
    index = Index(str(lib.root))
    rng = random.Random(3)
    built = 0
    for _ in range(2000):
        manifest = mutate(buildable_seed(), rng)
        if check(index, manifest) != "loaded":
            continue
        name = rng.choice([p["name"] for p in manifest.get("pipelines", [])] or ["os"])
        proc = lib.run("--store", str(tmp_path / "store"), "--output-directory", str(tmp_path / f"out-{built}"),
                       "--export", name, manifest=manifest, check=False)
        assert "Traceback" not in proc.stderr, f"{proc.stderr}\non manifest:\n{json.dumps(manifest)}"
        assert proc.returncode in (0, 1, 2), proc.stderr
        built += 1
        if built == 6:
            break
    assert built == 6
