"""The Android demo's core module (android_demo/core, plain Kotlin/JVM) against the Python side.

The golden tile plans (tests/data/tiling/plans.json) are checked against zoo.tiling without any
Kotlin. Everything else compiles android_demo/core together with its test runner
(core/src/test/kotlin/.../CoreTests.kt, a plain ``main``) ONCE per module with kotlinc on the JVM,
then runs it with ``java`` and checks its outputs here:

1. tile plans and blend weights equal plans.json bit for bit;
2. the golden manifests of tests/data/manifests parse, broken ones fail with the expected
   message, and the streamed sha256 check (file and tree methods) agrees with export_mobile;
3. the results.json that ResultsWriter writes for a fake model validates against
   export_mobile/schemas/results.schema.json (jsonschema) and its statistics equal numpy's:
   median = numpy.percentile(times, 50), p90 = numpy.percentile(times, 90, method="linear"),
   min, mean; each image's output_sha256 equals measure.results.output_sha256 of
   zoo.tiling.tiled_forward with the same fake model; its artifact.quantization is the manifest's
   quantization.provenance (absent when the manifest has none), and `zoo device import` + the
   report label the phone's rows with it;
4. int8/uint8 quantize/dequantize equal the desktop runner's numpy formulas, NHWC <-> NCHW;
5. Tiler with fake models (identity, invert, 3x3 box filter, nearest and box-then-nearest
   upscaling x2, x3, x4) equals zoo.tiling.tiled_forward (arrays passed as raw float32 files),
   and identity / nearest reproduce the image.

The compiler is looked for in this order: $KOTLINC (a kotlinc binary), $KOTLIN_HOME/lib,
``kotlinc`` on PATH, the npm package ``kotlin-compiler`` (``npm install -g kotlin-compiler@2.1.0``
is the whole kotlinc distribution), and org.jetbrains.kotlin:kotlin-compiler-embeddable:2.1.0 with
its dependencies in ~/.m2. Without one (or without java) the Kotlin tests are skipped with the
reason; set ZOO_REQUIRE_KOTLIN=1 to make that a failure instead.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.tasks import canonical_task

ROOT = Path(__file__).resolve().parents[1]
ANDROID = ROOT / "android_demo"
CORE_MAIN = ANDROID / "core" / "src" / "main" / "kotlin"
CORE_TEST = ANDROID / "core" / "src" / "test" / "kotlin"
PLANS = ROOT / "tests" / "data" / "tiling" / "plans.json"
MANIFESTS = ROOT / "tests" / "data" / "manifests"
RESULTS_SCHEMA = ROOT / "export_mobile" / "schemas" / "results.schema.json"
MAIN_CLASS = "org.restorationzoo.core.CoreTestsKt"

#: Jars of a kotlinc distribution's lib/ folder that run K2JVMCompiler.
DIST_JARS = ["kotlin-compiler.jar", "kotlin-stdlib.jar", "kotlin-script-runtime.jar", "kotlin-reflect.jar",
             "trove4j.jar", "kotlin-daemon.jar", "annotations-13.0.jar"]
#: The same from Maven: kotlin-compiler-embeddable 2.1.0 and the dependencies its POM names.
M2_JARS = [
    "org/jetbrains/kotlin/kotlin-compiler-embeddable/2.1.0/kotlin-compiler-embeddable-2.1.0.jar",
    "org/jetbrains/kotlin/kotlin-stdlib/2.1.0/kotlin-stdlib-2.1.0.jar",
    "org/jetbrains/kotlin/kotlin-script-runtime/2.1.0/kotlin-script-runtime-2.1.0.jar",
    "org/jetbrains/kotlin/kotlin-reflect/1.6.10/kotlin-reflect-1.6.10.jar",
    "org/jetbrains/kotlin/kotlin-daemon-embeddable/2.1.0/kotlin-daemon-embeddable-2.1.0.jar",
    "org/jetbrains/intellij/deps/trove4j/1.0.20200330/trove4j-1.0.20200330.jar",
    "org/jetbrains/annotations/13.0/annotations-13.0.jar",
]


def _load_make_plans():
    spec = importlib.util.spec_from_file_location("make_plans", PLANS.parent / "make_plans.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Golden tile plans (no Kotlin needed)
# --------------------------------------------------------------------------------------------


def test_golden_plans_equal_zoo_tiling():
    """plans.json is exactly what zoo.tiling computes now (regenerate with make_plans.py)."""
    make_plans = _load_make_plans()
    golden = json.loads(PLANS.read_text(encoding="utf-8"))
    assert golden == make_plans.make_plans(), "run: python tests/data/tiling/make_plans.py"
    assert PLANS.read_text(encoding="utf-8") == make_plans.render(golden)


def test_golden_plans_cover_the_cases_the_apps_need():
    golden = json.loads(PLANS.read_text(encoding="utf-8"))
    keys = ["height", "width", "tile", "overlap", "size_multiple", "scale", "margin", "padded_height",
            "padded_width", "pad_modes", "row_starts", "col_starts", "row_weights", "col_weights"]
    assert all(list(case) == keys for case in golden)
    assert {1, 8, 16} <= {case["size_multiple"] for case in golden}
    assert {1, 2, 3, 4} <= {case["scale"] for case in golden}
    for scale in (2, 3, 4):  # each super-resolution scale with odd sizes and an odd requested overlap
        assert any(c["scale"] == scale and c["height"] % 2 and c["width"] % 2 and c["overlap"] % 2 for c in golden)
    assert any(c["scale"] == 3 and c["height"] < c["tile"] and c["width"] < c["tile"] for c in golden)
    assert any(len(c["row_starts"]) == len(c["col_starts"]) == 1 and c["height"] == c["tile"] for c in golden)
    assert any(c["height"] < c["tile"] and c["width"] < c["tile"] for c in golden)  # smaller than a tile
    assert any(c["overlap"] % c["size_multiple"] for c in golden)  # overlap rounded up
    assert any("replicate" in c["pad_modes"] and "reflect" in c["pad_modes"] for c in golden)
    assert any(c["margin"] < (c["overlap"] // 2) for c in golden)  # a linear ramp
    for case in golden:
        for axis, length in (("row", case["padded_height"]), ("col", case["padded_width"])):
            weights = np.asarray(case[f"{axis}_weights"], dtype=np.float64)
            assert weights.shape == (len(case[f"{axis}_starts"]), case["tile"] * case["scale"])
            total = np.zeros(length * case["scale"])
            for start, row in zip(case[f"{axis}_starts"], weights):
                total[start * case["scale"]: (start + case["tile"]) * case["scale"]] += row
            np.testing.assert_allclose(total, 1.0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Finding the Kotlin compiler
# --------------------------------------------------------------------------------------------


def _lib_jars(lib: Path) -> list[Path] | None:
    jars = [lib / name for name in DIST_JARS]
    required = [jar for jar in jars if jar.name != "annotations-13.0.jar"]
    return [jar for jar in jars if jar.is_file()] if all(jar.is_file() for jar in required) else None


def _npm_lib_dirs() -> list[Path]:
    roots = [Path("/usr/lib/node_modules"), Path("/usr/local/lib/node_modules"),
             Path.home() / ".npm-global" / "lib" / "node_modules"]
    npm = shutil.which("npm")
    if npm:
        try:
            out = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30).stdout.strip()
            if out:
                roots.insert(0, Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    return [root / "kotlin-compiler" / "lib" for root in roots]


def find_kotlin_compiler() -> tuple[dict | None, str]:
    """``({"jars": [...], "stdlib": Path} or {"kotlinc": path, "stdlib": Path}, where)`` or ``(None, reason)``."""
    looked = []
    kotlinc_env = os.environ.get("KOTLINC")
    if kotlinc_env:
        binary = shutil.which(kotlinc_env) or (kotlinc_env if Path(kotlinc_env).is_file() else None)
        if not binary:
            return None, f"$KOTLINC={kotlinc_env} is not an executable kotlinc"
        stdlib = Path(binary).resolve().parent.parent / "lib" / "kotlin-stdlib.jar"
        if not stdlib.is_file():
            return None, f"$KOTLINC={kotlinc_env}: no kotlin-stdlib.jar at {stdlib}"
        return {"kotlinc": binary, "stdlib": stdlib}, f"$KOTLINC ({binary})"
    candidates = []
    if os.environ.get("KOTLIN_HOME"):
        candidates.append(("$KOTLIN_HOME", Path(os.environ["KOTLIN_HOME"]) / "lib"))
    on_path = shutil.which("kotlinc")
    if on_path:
        candidates.append(("kotlinc on PATH", Path(on_path).resolve().parent.parent / "lib"))
    candidates += [("npm kotlin-compiler", lib) for lib in _npm_lib_dirs()]
    for where, lib in candidates:
        jars = _lib_jars(lib)
        if jars:
            return {"jars": jars, "stdlib": lib / "kotlin-stdlib.jar"}, f"{where} ({lib})"
        looked.append(str(lib))
    m2 = Path(os.environ.get("M2_REPO", Path.home() / ".m2" / "repository"))
    jars = [m2 / rel for rel in M2_JARS]
    missing = [str(jar) for jar in jars if not jar.is_file()]
    if not missing:
        return {"jars": jars, "stdlib": jars[1]}, f"~/.m2 kotlin-compiler-embeddable 2.1.0 ({m2})"
    return None, ("no Kotlin compiler found: set $KOTLINC to a kotlinc binary, or run "
                  "`npm install -g kotlin-compiler@2.1.0` (the kotlinc 2.1.0 distribution), or put "
                  "kotlin-compiler-embeddable 2.1.0 and its dependencies in ~/.m2 "
                  f"(missing there: {', '.join(missing)}); looked in {', '.join(looked) or 'no lib folder'}")


def _skip_or_fail(reason: str):
    if os.environ.get("ZOO_REQUIRE_KOTLIN"):
        pytest.fail(f"ZOO_REQUIRE_KOTLIN is set but {reason}")
    pytest.skip(reason)


class Core:
    """The compiled core module + test runner."""

    def __init__(self, java: str, jar: Path, stdlib: Path, compile_seconds: float, where: str):
        self.java, self.jar, self.stdlib = java, jar, stdlib
        self.compile_seconds, self.where = compile_seconds, where

    def run(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        command = [self.java, "-cp", os.pathsep.join([str(self.jar), str(self.stdlib)]), MAIN_CLASS, *map(str, args)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture(scope="module")
def core(tmp_path_factory) -> Core:
    """Compile android_demo/core (+ CoreTests.kt) once for this module."""
    java = shutil.which("java")
    if not java:
        _skip_or_fail("java (JDK 17 or newer) is not on PATH")
    compiler, where = find_kotlin_compiler()
    if compiler is None:
        _skip_or_fail(where)
    sources = sorted(str(p) for p in CORE_MAIN.rglob("*.kt")) + sorted(str(p) for p in CORE_TEST.rglob("*.kt"))
    out = tmp_path_factory.mktemp("android-core") / "core-tests.jar"
    options = ["-no-stdlib", "-no-reflect", "-classpath", str(compiler["stdlib"]), "-jvm-target", "17",
               "-d", str(out), *sources]
    if "kotlinc" in compiler:
        command = [compiler["kotlinc"], *options]
    else:
        command = [java, "-Xmx1g", "-cp", os.pathsep.join(map(str, compiler["jars"])),
                   "org.jetbrains.kotlin.cli.jvm.K2JVMCompiler", *options]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or not out.is_file():
        pytest.fail(f"compiling android_demo/core with {where} failed:\n{result.stdout}\n{result.stderr}")
    print(f"compiled android_demo/core with {where} in {seconds:.1f} s")
    return Core(java, out, compiler["stdlib"], seconds, where)


# --------------------------------------------------------------------------------------------
# 0. The runner's own unit checks
# --------------------------------------------------------------------------------------------


def test_core_selftest(core):
    result = core.run("selftest")
    assert result.stdout.strip().splitlines()[-1].endswith(" passed, 0 failed"), result.stdout


# --------------------------------------------------------------------------------------------
# 1. Tile plans
# --------------------------------------------------------------------------------------------


def test_kotlin_tile_plans_equal_golden(core, tmp_path):
    out = tmp_path / "plans.json"
    result = core.run("plans", PLANS, out)
    assert " 0 failed" in result.stdout
    assert json.loads(out.read_text()) == json.loads(PLANS.read_text())  # every float32 weight bit


# --------------------------------------------------------------------------------------------
# 2. Manifests
# --------------------------------------------------------------------------------------------


def _golden(name: str) -> dict:
    return json.loads((MANIFESTS / name).read_text(encoding="utf-8"))


def test_kotlin_reads_golden_manifests(core, tmp_path):
    out = tmp_path / "manifests.json"
    core.run("manifests", MANIFESTS, out)
    parsed = json.loads(out.read_text())
    names = sorted(p.name for p in MANIFESTS.glob("*.json"))
    assert sorted(parsed) == names
    for name in names:
        doc, got = _golden(name), parsed[name]
        assert "error" not in got, got
        # An older alias in the file ("sr") is read as the task table's name ("super-resolution").
        assert got["model"] == doc["model"]["name"] and got["task"] == canonical_task(doc["model"]["task"])
        assert got["scale"] == doc["model"]["scale"] and got["target"] == doc["target"]
        assert got["precision"] == doc["precision"] and got["runtime"] == doc["backend"]["runtime"]
        assert got["artifact"] == {key: doc["artifact"][key] for key in got["artifact"]}
        for kind in ("inputs", "outputs"):
            for mine, theirs in zip(got[kind], doc[kind], strict=True):
                assert mine == {key: theirs[key] for key in mine}, (name, kind)
        assert got["tiling"] == {key: doc["tiling"][key] for key in got["tiling"]}
        assert got["dynamic_shapes"] is doc["dynamic_shapes"]
        # The provenance record is kept whole (every key, the same values); absent/null: none.
        assert got["provenance"] == (doc["quantization"] or {}).get("provenance"), name
        assert got["verify"] is None  # no artifact beside the golden files
    assert parsed["executorch-xnnpack-int8.json"]["android_runtime"] == "executorch"
    assert parsed["executorch-xnnpack-int8.json"]["provenance"]["method"] == "ptq"
    assert parsed["tflite-int8-nhwc.json"]["provenance"] is None  # written before the record existed
    assert parsed["tflite-int8-nhwc.json"]["android_runtime"] == "litert"
    assert parsed["coreml-fp16.json"]["android_runtime"].startswith("unsupported: target coreml")
    assert "does not run in the Android demo" in parsed["onnx-fp32-sr-x4.json"]["android_runtime"]
    assert _golden("onnx-fp32-sr-x4.json")["model"]["task"] == "sr"
    assert parsed["onnx-fp32-sr-x4.json"]["task"] == "super-resolution"


def _mutate(doc: dict, path: tuple, value) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()

# (golden file, field path, new value, words the error must contain)
BROKEN = [
    ("executorch-xnnpack-int8.json", ("inputs", 0, "dtype"), "float64",
     'manifest is invalid: field inputs[0].dtype: "float64" is not one of float32, float16, int8, uint8'),
    ("executorch-xnnpack-int8.json", ("format_version",), 2,
     "format_version 2, newer than this app reads (1); update the Android demo app"),
    ("executorch-xnnpack-int8.json", ("format",), "something-else", 'field format: "something-else" is not'),
    ("executorch-xnnpack-int8.json", ("tiling", "overlap"), _DELETE, "field tiling.overlap is missing"),
    ("executorch-xnnpack-int8.json", ("tiling", "overlap"), 200,
     "field tiling: overlap 200 (rounded up to 208, a multiple of 16) is not less than half the tile 256; "
     "use overlap 0 .. 112 or a larger tile"),
    ("executorch-xnnpack-int8.json", ("tiling", "tile"), [256, 128], "tile 256x128 is not square"),
    ("executorch-xnnpack-int8.json", ("tiling", "scale"), 2, "field tiling.scale: 2 differs from model.scale 1"),
    ("executorch-xnnpack-int8.json", ("inputs", 0, "shape"), [1, 3, 128, 128],
     "field inputs[0].shape: [1, 3, 128, 128] does not fit NCHW RGB tiles of tiling.tile 256"),
    ("executorch-xnnpack-int8.json", ("inputs", 0, "shape"), [1, 3, -1, -1], "dynamic dimensions"),
    ("executorch-xnnpack-int8.json", ("artifact", "sha256"), "XYZ",
     'field artifact.sha256: "XYZ" is not 64 lowercase hex digits'),
    ("executorch-xnnpack-int8.json", ("artifact", "file"), "../model.pte", "is not a plain file name"),
    ("executorch-xnnpack-int8.json", ("model",), _DELETE, "field model is missing"),
    ("executorch-xnnpack-int8.json", ("quantization", "provenance", "method"), "gptq",
     'field quantization.provenance.method: "gptq" is not one of ptq, qat, target'),
    ("executorch-xnnpack-int8.json", ("quantization", "provenance", "steps"), _DELETE,
     "field quantization.provenance.steps is missing"),
    ("executorch-xnnpack-int8.json", ("quantization", "provenance", "calibration", "images"), 0,
     "field quantization.provenance.calibration.images: 0 is less than the minimum of 1"),
    ("executorch-xnnpack-int8.json", ("quantization",), "ptq", 'field quantization: "ptq" is not an object'),
    ("tflite-int8-nhwc.json", ("inputs", 0, "quantization"), None,
     'field inputs[0].quantization: null, but int8 tensors need {"scale", "zero_point"}'),
    ("tflite-int8-nhwc.json", ("outputs", 0, "quantization", "zero_point"), 300,
     "field outputs[0].quantization.zero_point: 300 is outside the int8 range -128 .. 127"),
    ("tflite-int8-nhwc.json", ("outputs", 0, "quantization", "scale"), 0, "is not a positive number"),
    ("onnx-fp32-sr-x4.json", ("outputs", 0, "shape"), [1, 3, 64, 64],
     "does not fit NCHW RGB tiles of tiling.tile 64 x scale 4 = 256"),
]


def test_kotlin_refuses_broken_manifests_naming_the_field(core, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for index, (golden, path, value, _words) in enumerate(BROKEN):
        doc = _mutate(_golden(golden), path, value)
        (folder / f"case{index:02d}.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    (folder / "case99.json").write_text('{"format": "zoo-mobile-manifest",', encoding="utf-8")
    out = tmp_path / "out.json"
    core.run("manifests", folder, out)
    parsed = json.loads(out.read_text())
    for index, (_golden_name, path, _value, words) in enumerate(BROKEN):
        got = parsed[f"case{index:02d}.json"]
        assert "error" in got, (path, got)
        assert words.replace("manifest is invalid", f"case{index:02d}.json is invalid") in got["error"], (path, got)
    assert "is not valid JSON (invalid JSON at line 1" in parsed["case99.json"]["error"]


def test_kotlin_checks_artifact_sha256_streamed(core, tmp_path):
    from export_mobile.manifest import sha256_of

    folder = tmp_path / "exports"
    folder.mkdir()
    payload = bytes(range(256)) * 9000  # 2.3 MB: more than one 1 MiB read
    for name, data in (("good.pte", payload), ("corrupt.pte", payload)):
        (folder / name).write_bytes(data)
        doc = _golden("executorch-xnnpack-int8.json")
        doc["artifact"].update(file=name, bytes=len(data), sha256=hashlib.sha256(payload).hexdigest())
        (folder / f"{name}.json").write_text(json.dumps(doc), encoding="utf-8")
    (folder / "corrupt.pte").write_bytes(payload[:-1] + b"x")
    package = folder / "model.mlpackage"
    (package / "Data" / "weights").mkdir(parents=True)
    (package / "Manifest.json").write_text('{"a": 1}')
    (package / "Data" / "model.mlmodel").write_bytes(b"\x00\x01" * 1000)
    (package / "Data" / "weights" / "weight.bin").write_bytes(payload[:5000])
    digest, method, size = sha256_of(package)
    doc = _golden("coreml-fp16.json")
    doc["artifact"].update(file=package.name, bytes=size, sha256=digest, sha256_method=method)
    (folder / "tree.json").write_text(json.dumps(doc), encoding="utf-8")
    out = tmp_path / "out.json"
    core.run("manifests", folder, out)
    parsed = json.loads(out.read_text())
    assert parsed["good.pte.json"]["verify"] == "ok"
    assert parsed["tree.json"]["verify"] == "ok"
    bad = parsed["corrupt.pte.json"]["verify"]
    assert bad.startswith("error: artifact corrupt.pte does not match its manifest (sha256 ")
    assert "the file is corrupted or was replaced" in bad


# --------------------------------------------------------------------------------------------
# 3. Benchmark results
# --------------------------------------------------------------------------------------------


def _invert(batch: torch.Tensor) -> torch.Tensor:
    return 1.0 - batch


#: ``_bench_folder(provenance=...)`` default: the golden manifest's own record.
_GOLDEN_PROVENANCE = object()


def _bench_folder(root: Path, name: str, *, corrupt: bool = False, provenance=_GOLDEN_PROVENANCE) -> Path:
    """A benchmark folder for the golden int8 manifest at tile 32; ``provenance`` replaces the
    manifest's ``quantization.provenance`` (a record, or None for null)."""
    from zoo.data.io import write_image

    folder = root / name
    (folder / "images").mkdir(parents=True)
    artifact = bytes(range(256)) * 40
    (folder / "fake.pte").write_bytes(artifact + (b"!" if corrupt else b""))
    doc = _golden("executorch-xnnpack-int8.json")
    if provenance is not _GOLDEN_PROVENANCE:
        doc["quantization"]["provenance"] = provenance
    doc["artifact"].update(file="fake.pte", bytes=len(artifact), sha256=hashlib.sha256(artifact).hexdigest())
    doc["tiling"].update(tile=[32, 32], overlap=8, margin=4, size_multiple=8)
    doc["inputs"][0]["shape"] = [1, 3, 32, 32]
    doc["outputs"][0]["shape"] = [1, 3, 32, 32]
    (folder / "manifest.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    generator = torch.Generator().manual_seed(3)
    for image_name, (height, width) in (("gradient", (45, 37)), ("wide", (20, 70))):
        image = torch.rand(3, height, width, generator=generator)
        write_image(folder / "images" / f"{image_name}.png", image)
    return folder


def test_kotlin_benchmark_writes_valid_results_with_numpy_statistics(core, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from measure.results import output_sha256, validate_results
    from zoo.data.io import read_image
    from zoo.tiling import plan_tiles, tiled_forward

    folder = _bench_folder(tmp_path, "run-1")
    result = core.run("bench", folder, 7, 2, "results.json", "invert")
    assert "bench: ok" in result.stdout, result.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["fake.pte", "images", "manifest.json", "results.json",
                                                       "times_ms.json"]  # no .tmp, no error.txt
    doc = json.loads((folder / "results.json").read_text(encoding="utf-8"))

    schema = json.loads(RESULTS_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(doc)
    validate_results(doc)  # the reader `zoo device import` uses
    assert doc["format"] == "zoo-results" and doc["format_version"] == 1
    (record,) = doc["records"]
    assert record["kind"] == "device" and record["model"] == "hinet-lite" and record["task"] == "denoise"
    assert record["artifact"] == {"file": "fake.pte", "sha256": hashlib.sha256(bytes(range(256)) * 40).hexdigest(),
                                  "target": "executorch-xnnpack", "precision": "int8", "bytes": 10240,
                                  "quantization": _golden("executorch-xnnpack-int8.json")["quantization"]["provenance"]}
    assert record["input"] == {"height": 32, "width": 32, "batch": 1, "tile": 32, "overlap": 8}

    times = np.asarray(json.loads((folder / "times_ms.json").read_text()), dtype=np.float64)
    latency = record["latency_ms"]
    assert latency["runs"] == len(times) == 7 and latency["warmup"] == 2 and latency["per"] == "tile"
    assert latency["median"] == np.percentile(times, 50)
    assert latency["p90"] == np.percentile(times, 90, method="linear")
    assert latency["min"] == times.min()
    assert latency["mean"] == pytest.approx(times.mean(), rel=1e-12)
    assert record["throughput"]["megapixels_per_s"] == pytest.approx(32 * 32 / 1e6 / (latency["median"] / 1000))

    names = [image["name"] for image in record["images"]]
    assert names == ["gradient", "wide"]
    for entry in record["images"]:
        loaded = read_image(folder / "images" / f"{entry['name']}.png").image
        expected = tiled_forward(_invert, loaded, tile=32, overlap=8, size_multiple=8, margin=4)
        assert entry["output_sha256"] == output_sha256(expected)
        assert (entry["height"], entry["width"]) == tuple(loaded.shape[1:])
        assert entry["tiles"] == plan_tiles(*loaded.shape[1:], tile=32, overlap=8, size_multiple=8).num_tiles


QAT_PROVENANCE = {"method": "qat", "recipe": "xnnpack", "mixed": "first-last",
                  "calibration": {"data": "urban100+bundled", "batches": 8, "degradation": "gaussian:15-50"},
                  "steps": 300, "options": {"ranges": "ptq", "learnable_scales": True, "distill_from_float": 1.0,
                                            "lr": 2e-05},
                  "source": "config qat_x, run runs/qat_x", "note": "hand-made for tests/test_android_core.py"}


def test_kotlin_benchmark_copies_the_manifest_provenance_into_the_report(core, tmp_path):
    """The phone's results carry the manifest's provenance record unchanged (QAT here), `zoo device
    import` keeps it, and the report's phone rows say how the artifact was quantized; a manifest
    without the record gives a record without the field, whose rows read unknown."""
    from measure import device as dv
    from measure import measured as ms
    from measure import report as rp
    from quantize.provenance import UNKNOWN, provenance_label

    labels = {}
    for name, provenance in (("qat", QAT_PROVENANCE), ("none", None)):
        folder = _bench_folder(tmp_path, name, provenance=provenance)
        assert "bench: ok" in core.run("bench", folder, 3, 1, "results.json", "identity").stdout
        (record,) = json.loads((folder / "results.json").read_text(encoding="utf-8"))["records"]
        if provenance is None:
            assert "quantization" not in record["artifact"]  # absent: not recorded
        else:
            assert record["artifact"]["quantization"] == provenance  # every key, the same values
        (stored,) = dv.import_results(folder / "results.json", store=tmp_path / f"store-{name}")
        assert json.loads(stored.read_text(encoding="utf-8"))["records"][0]["artifact"] == record["artifact"]
        loaded, _ = ms.load_results([stored])
        tables = {table.id: table for section in rp.build_report(loaded).sections for table in section.tables}
        labels[name] = {table_id: [row[tables[table_id].columns.index("quantization")] for row in tables[table_id].rows]
                        for table_id in ("latency-table", "device-table", "summary")}
    expected = provenance_label(QAT_PROVENANCE)
    assert expected.startswith("QAT xnnpack, first-last float, LSQ scales, 300 steps, distilled from float")
    assert labels["qat"] == {table_id: [expected] for table_id in labels["qat"]}
    assert labels["none"] == {table_id: [UNKNOWN] for table_id in labels["none"]}


def test_kotlin_benchmark_reports_errors_in_error_txt(core, tmp_path):
    corrupt = _bench_folder(tmp_path, "corrupt", corrupt=True)
    result = core.run("bench", corrupt, 3, 1, "results.json", "identity")
    assert "bench: failed" in result.stdout
    assert not (corrupt / "results.json").exists() and not (corrupt / "error.txt.tmp").exists()
    message = (corrupt / "error.txt").read_text(encoding="utf-8")
    assert "artifact fake.pte does not match its manifest" in message and message.endswith("\n")

    bad_runs = _bench_folder(tmp_path, "bad-runs")
    core.run("bench", bad_runs, 0, 1, "results.json", "identity")
    assert "runs must be at least 1 (got 0)" in (bad_runs / "error.txt").read_text(encoding="utf-8")

    # A stale results.json from an earlier run is removed before a failing run.
    stale = _bench_folder(tmp_path, "stale")
    (stale / "results.json").write_text("{}")
    (stale / "manifest.json").write_text("{")
    core.run("bench", stale, 2, 0, "results.json", "identity")
    assert not (stale / "results.json").exists()
    assert "is not valid JSON" in (stale / "error.txt").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# 4. Quantization and layouts
# --------------------------------------------------------------------------------------------


def test_kotlin_quantization_and_layouts_equal_numpy(core, tmp_path):
    rng = np.random.default_rng(0)
    params = [
        {"scale": 1.0 / 255.0, "zero_point": -128, "dtype": "int8"},
        {"scale": 1.0 / 255.0, "zero_point": 0, "dtype": "uint8"},
        {"scale": 0.0123, "zero_point": 3, "dtype": "int8"},
        {"scale": 0.02, "zero_point": 128, "dtype": "uint8"},
    ]
    values = np.concatenate([
        np.arange(256, dtype=np.float32) / np.float32(255),  # every 8-bit level
        rng.uniform(-0.3, 1.3, 300).astype(np.float32),
        ((np.arange(-20, 20) + 0.5) * np.float32(0.0123)).astype(np.float32),  # halfway cases
        np.asarray([0.0, 1.0, -0.0, 5.0, -5.0], dtype=np.float32),
    ])
    chw = (3, 4, 5)
    request = {"values": [float(v) for v in values], "params": params, "chw": list(chw)}
    (tmp_path / "in.json").write_text(json.dumps(request))
    core.run("quant", tmp_path / "in.json", tmp_path / "out.json")
    blocks = json.loads((tmp_path / "out.json").read_text())
    for param, block in zip(params, blocks[:-1], strict=True):
        dtype = np.dtype(param["dtype"])
        limits = np.iinfo(dtype)
        # export_mobile/targets/tflite.py's formulas, verbatim
        quantized = np.clip(np.round(values / param["scale"]) + param["zero_point"], limits.min, limits.max)
        quantized = quantized.astype(dtype)
        restored = (quantized.astype(np.float32) - param["zero_point"]) * np.float32(param["scale"])
        assert block["quantized"] == quantized.astype(int).tolist(), param
        assert np.array_equal(np.asarray(block["dequantized"], dtype=np.float32), restored), param
    layouts = blocks[-1]
    c, h, w = chw
    nchw = np.arange(c * h * w, dtype=np.float32).reshape(c, h, w)
    assert layouts["nhwc"] == nchw.transpose(1, 2, 0).ravel().tolist()
    assert layouts["nchw_round_trip"] and layouts["bytes_round_trip"] and layouts["codec_levels_exact"]
    levels = ((np.arange(c * h * w) % 256) / np.float32(255)).astype(np.float32).reshape(c, h, w).transpose(1, 2, 0)
    expected = np.clip(np.round(levels / (1.0 / 255.0)) + -128, -128, 127).astype(np.int8)
    assert layouts["codec_encoded"] == expected.ravel().astype(int).tolist()


# --------------------------------------------------------------------------------------------
# 5. Tiler versus zoo.tiling.tiled_forward
# --------------------------------------------------------------------------------------------


def _box3(batch: torch.Tensor) -> torch.Tensor:
    """3x3 mean per channel, zero padding (a conv with radius 1)."""
    return torch.nn.functional.conv2d(batch, torch.full((3, 1, 3, 3), 1.0 / 9.0), padding=1, groups=3)


def _torch_model(name: str):
    """The fake models of CoreTests.kt: identity, invert, box3, nearestNx and box3-nearestNx (SR xN)."""
    if name == "identity":
        return lambda batch: batch.clone()
    if name == "invert":
        return _invert
    if name == "box3":
        return _box3
    upscaling = re.fullmatch(r"(box3-)?nearest([1-9])x", name)
    if upscaling:
        factor, blur = int(upscaling.group(2)), bool(upscaling.group(1))
        return lambda batch: (_box3(batch) if blur else batch).repeat_interleave(factor, dim=2) \
            .repeat_interleave(factor, dim=3)
    raise ValueError(name)


# (model, height, width, tile, overlap, size_multiple, scale, margin)
TILER_CASES = [
    ("identity", 45, 37, 16, 4, 1, 1, None),
    ("identity", 5, 9, 24, 6, 8, 1, None),  # smaller than one tile: replicate padding
    ("invert", 30, 50, 24, 9, 3, 1, 0),  # margin 0: linear ramps, fractional weights
    ("invert", 41, 38, 20, 7, 1, 1, None),  # odd overlap: half-weight ramp pixels
    ("nearest2x", 23, 31, 16, 6, 1, 2, None),  # super-resolution x2
    ("box3-nearest2x", 37, 21, 20, 7, 1, 2, 1),  # x2, odd overlap, margin 1: the ramp's weights matter
    ("box3-nearest3x", 29, 43, 16, 5, 1, 3, None),  # x3, odd sizes and overlap
    ("nearest3x", 11, 7, 16, 6, 1, 3, None),  # x3, smaller than one tile
    ("box3-nearest3x", 33, 47, 24, 7, 2, 3, None),  # x3, size_multiple 2 (overlap 7 -> 8), reflect padding
    ("box3-nearest4x", 27, 35, 12, 5, 1, 4, None),  # x4, odd sizes and overlap
    ("box3", 41, 38, 20, 7, 1, 1, None),  # radius 1 <= margin 3: padding content matters
    ("box3", 45, 50, 32, 8, 8, 1, None),  # size_multiple 8: reflect padding at the bottom/right
]


TILER_IDS = [f"{c[0]}-{c[1]}x{c[2]}-t{c[3]}-o{c[4]}-m{c[5]}-s{c[6]}" for c in TILER_CASES]


@pytest.mark.parametrize("case", TILER_CASES, ids=TILER_IDS)
def test_kotlin_tiler_equals_tiled_forward(core, tmp_path, case):
    from measure.results import output_sha256
    from zoo.tiling import plan_tiles, tiled_forward

    model, height, width, tile, overlap, size_multiple, scale, margin = case
    generator = torch.Generator().manual_seed(height * 1000 + width)
    image = torch.randint(0, 256, (3, height, width), generator=generator).float() / 255.0  # 8-bit levels
    image.numpy().astype("<f4").tofile(tmp_path / "in.f32")
    spec = {"input": str(tmp_path / "in.f32"), "output": str(tmp_path / "out.f32"), "info": str(tmp_path / "info.json"),
            "channels": 3, "height": height, "width": width, "model": model, "tile": tile, "overlap": overlap,
            "size_multiple": size_multiple, "scale": scale, "margin": margin}
    (tmp_path / "case.json").write_text(json.dumps(spec))
    core.run("tile", tmp_path / "case.json")
    info = json.loads((tmp_path / "info.json").read_text())
    kotlin = np.fromfile(tmp_path / "out.f32", dtype="<f4").reshape(3, height * scale, width * scale)

    expected = tiled_forward(_torch_model(model), image, tile=tile, overlap=overlap, size_multiple=size_multiple,
                             scale=scale, margin=margin).numpy()
    plan = plan_tiles(height, width, tile=tile, overlap=overlap, size_multiple=size_multiple, margin=margin)
    assert (info["channels"], info["height"], info["width"]) == (3, height * scale, width * scale)
    assert info["calls"] == info["progress"] == plan.num_tiles
    assert np.abs(kotlin - expected).max() <= 1e-6
    assert info["sha256"] == output_sha256(torch.from_numpy(expected))  # the same 8-bit output
    if model == "identity":
        assert np.abs(kotlin - image.numpy()).max() <= 1e-6
        assert info["sha256"] == output_sha256(image)
    if model.startswith("nearest"):
        upsampled = image.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2).numpy()
        assert np.abs(kotlin - upsampled).max() <= 1e-6
