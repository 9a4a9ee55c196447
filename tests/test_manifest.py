"""Export manifests: the JSON Schema, both validators, checksums, reading/writing, and the
artifact check that runs before any runtime loads a file. No toolchain is needed here."""

import hashlib
import json
from pathlib import Path

import pytest

from export_mobile import manifest as mf
from export_mobile.runners import verify_artifact
from zoo.errors import ZooError

GOLDEN_DIR = Path(__file__).parent / "data" / "manifests"
GOLDEN = sorted(GOLDEN_DIR.glob("*.json"))


def _golden(name="executorch-xnnpack-int8.json") -> dict:
    return json.loads((GOLDEN_DIR / name).read_text(encoding="utf-8"))


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = mf.load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_there_are_golden_manifests_for_each_artifact_format():
    formats = {json.loads(path.read_text())["artifact"]["format"] for path in GOLDEN}
    assert formats == {"pte", "tflite", "mlpackage", "onnx"}


@pytest.mark.parametrize("path", GOLDEN, ids=[p.name for p in GOLDEN])
@pytest.mark.parametrize("use_jsonschema", [True, False], ids=["jsonschema", "builtin"])
def test_golden_manifests_are_valid(path, use_jsonschema):
    if use_jsonschema:
        pytest.importorskip("jsonschema")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    assert mf.manifest_errors(manifest, use_jsonschema=use_jsonschema) == []
    assert mf.validate_manifest(manifest, use_jsonschema=use_jsonschema) is manifest


def _set(document: dict, path: tuple, value):
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value


_DELETE = object()

# (change, the field path the error must name, words of the message)
BROKEN = [
    (("inputs", 0, "dtype"), "float64", "inputs[0].dtype", "float64"),
    (("precision",), "int4", "precision", "int4"),
    (("artifact", "sha256"), "XYZ", "artifact.sha256", "XYZ"),
    (("artifact", "file"), "sub/model.pte", "artifact.file", "sub/model.pte"),
    (("tiling", "tile"), [64], "tiling.tile", "[64]"),
    (("model", "scale"), 0, "model.scale", "0"),
    (("outputs", 0, "layout"), "CHWN", "outputs[0].layout", "CHWN"),
    (("inputs", 0, "quantization"), {"scale": 0, "zero_point": 0}, "inputs[0].quantization.scale", "0"),
    (("inputs", 0, "quantization"), {"scale": 0.1, "zero_point": 1.5}, "inputs[0].quantization.zero_point", "1.5"),
    (("backend", "partitions"), -1, "backend.partitions", "-1"),
    (("model",), _DELETE, "(top level)", "'model'"),
    (("surprise",), 1, "(top level)", "surprise"),
    (("format",), "something-else", "format", "zoo-mobile-manifest"),
    (("dynamic_shapes",), "no", "dynamic_shapes", "no"),
    (("verification", "ran"), 1, "verification.ran", "1"),
]


@pytest.mark.parametrize("use_jsonschema", [True, False], ids=["jsonschema", "builtin"])
@pytest.mark.parametrize("path,value,field,words", BROKEN, ids=[b[2] + "=" + str(b[1])[:12] for b in BROKEN])
def test_a_broken_field_is_named(path, value, field, words, use_jsonschema):
    if use_jsonschema:
        pytest.importorskip("jsonschema")
    manifest = _golden()
    _set(manifest, path, value)
    errors = mf.manifest_errors(manifest, use_jsonschema=use_jsonschema)
    assert len(errors) == 1, errors
    assert errors[0].startswith(field + ":"), errors
    assert words in errors[0]
    with pytest.raises(ZooError, match="invalid: field " + field.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")
                       .replace("(", r"\(").replace(")", r"\)")):
        mf.validate_manifest(manifest, use_jsonschema=use_jsonschema)


def test_a_newer_format_version_asks_for_an_upgrade():
    manifest = _golden()
    manifest["format_version"] = 2
    with pytest.raises(ZooError, match="upgrade"):
        mf.validate_manifest(manifest)


def _tile_times(manifest: dict, scale: int) -> None:
    """Set model and tiling scale to ``scale`` and the output tensor to one tile x scale (NCHW)."""
    side = manifest["tiling"]["tile"][0] * scale
    manifest["model"]["scale"] = manifest["tiling"]["scale"] = scale
    manifest["outputs"][0].update(shape=[1, 3, side, side], layout="NCHW")


# (golden file, change, words of the one error) for what a schema-valid manifest cannot truly declare
IMPOSSIBLE = [
    ("executorch-xnnpack-int8.json", lambda m: m["model"].update(name="hinet-lite-s"),
     "field model: hinet-lite-s is variant 'lite-s' in this zoo, the manifest says 'lite': it names another model "
     "than the one exported"),
    ("executorch-xnnpack-int8.json", lambda m: _tile_times(m, 2),
     "field model: hinet-lite is scale 1 in this zoo, the manifest says 2"),
    ("executorch-xnnpack-int8.json", lambda m: m["model"].update(task="deblur"),
     "field model: hinet-lite is task 'denoise' in this zoo, the manifest says 'deblur'"),
    ("executorch-xnnpack-int8.json", lambda m: m.update(quantization=None),
     "field quantization: null for an int8 artifact"),
    ("coreml-fp16.json", lambda m: m.update(quantization={"method": "ptq"}),
     "field quantization: describes an int8 model (method ptq) but precision is fp16"),
    ("executorch-xnnpack-int8.json", lambda m: m.update(target="onnx"),
     "field artifact.file: hinet-lite_executorch-xnnpack_int8_256x256.pte is not a .onnx file, which target onnx "
     "writes"),
]


@pytest.mark.parametrize("name, change, words", IMPOSSIBLE,
                         ids=["other-model", "scale", "task", "int8-unquantized", "fp16-quantized", "target"])
def test_a_manifest_declaring_what_cannot_be_true_is_refused_when_read(tmp_path, name, change, words):
    """Before: each passed, and zoo run restored with the file while zoo bench recorded another
    model's MACs or the int8 peak, zoo check compared with another model or scale."""
    manifest = _golden(name)
    assert mf.declared_errors(manifest) == []
    change(manifest)
    assert mf.manifest_errors(manifest) == []  # the schema alone allows each of them
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ZooError) as err:
        mf.read_manifest(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'manifest.json'} is invalid: {words}")
    assert str(err.value).endswith("re-export the artifact with `zoo export` (do not edit manifest.json by hand)")


def test_models_and_targets_this_zoo_does_not_know_are_not_compared():
    manifest = _golden("onnx-fp32-sr-x4.json")  # example-sr-x4: no card here
    assert mf.declared_errors(manifest) == []
    manifest["target"] = "newer-target"
    assert mf.declared_errors(manifest) == []


def test_artifact_suffixes_are_known_without_importing_a_toolchain():
    from export_mobile.targets import artifact_suffix, get_target, target_names

    for name in target_names():
        assert artifact_suffix(name) == get_target(name).suffix
    assert artifact_suffix("nope") is None


def test_sha256_of_a_file_is_the_sha256_of_its_bytes(tmp_path):
    data = bytes(range(256)) * 4099  # spans several read blocks
    path = tmp_path / "model.pte"
    path.write_bytes(data)
    assert mf.sha256_of(path) == (hashlib.sha256(data).hexdigest(), "file", len(data))


def test_sha256_of_a_folder_follows_the_documented_tree_rule(tmp_path):
    package = tmp_path / "model.mlpackage"
    (package / "Data" / "weights").mkdir(parents=True)
    files = {"Manifest.json": b"{}", "Data/model.mlmodel": b"\x00\x01program", "Data/weights/weight.bin": b"w" * 1000}
    for relative, content in files.items():
        (package / relative).write_bytes(content)
    # The rule from the schema: one "path<TAB>sha256\n" line per file, sorted by path.
    text = "".join(f"{relative}\t{hashlib.sha256(files[relative]).hexdigest()}\n" for relative in sorted(files))
    digest, method, size = mf.sha256_of(package)
    assert (digest, method, size) == (hashlib.sha256(text.encode()).hexdigest(), "tree", sum(map(len, files.values())))
    (package / "Data/weights/weight.bin").write_bytes(b"w" * 999 + b"x")
    assert mf.sha256_of(package)[0] != digest


def test_write_and_read_round_trip(tmp_path):
    manifest = _golden("tflite-int8-nhwc.json")
    path = mf.write_manifest(tmp_path, manifest)
    assert path == tmp_path / "manifest.json"
    assert mf.read_manifest(tmp_path) == manifest
    assert mf.read_manifest(path) == manifest
    assert mf.read_manifest(tmp_path / manifest["artifact"]["file"]) == manifest  # via the artifact's path


def test_an_invalid_manifest_is_not_written(tmp_path):
    manifest = _golden()
    manifest["precision"] = "fp64"
    with pytest.raises(ZooError, match="precision"):
        mf.write_manifest(tmp_path, manifest)
    assert list(tmp_path.iterdir()) == []


def test_read_manifest_errors(tmp_path):
    with pytest.raises(ZooError, match="no manifest.json"):
        mf.read_manifest(tmp_path)
    # A mistyped export folder is named itself, not as "no manifest.json at <its parent>".
    with pytest.raises(ZooError, match=r"int8_typo does not exist") as missing:
        mf.read_manifest(tmp_path / "int8_typo")
    assert "no manifest.json" not in str(missing.value)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ZooError, match="not valid JSON"):
        mf.read_manifest(tmp_path)
    broken = _golden()
    broken["inputs"][0]["layout"] = "HWC"
    (tmp_path / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(ZooError, match=r"inputs\[0\]\.layout"):
        mf.read_manifest(tmp_path)


def _export_folder(tmp_path, content=b"\x00pte program bytes\xff" * 100) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    manifest = _golden()
    (folder / manifest["artifact"]["file"]).write_bytes(content)
    manifest["artifact"]["sha256"] = hashlib.sha256(content).hexdigest()
    manifest["artifact"]["bytes"] = len(content)
    mf.write_manifest(folder, manifest)
    return folder


def test_verify_artifact_accepts_the_folder_the_artifact_or_the_manifest(tmp_path):
    folder = _export_folder(tmp_path)
    artifact = folder / _golden()["artifact"]["file"]
    for location in (folder, artifact, folder / "manifest.json"):
        manifest, path = verify_artifact(location)
        assert path == artifact and manifest["target"] == "executorch-xnnpack"


def test_a_corrupted_artifact_is_refused_before_loading(tmp_path):
    folder = _export_folder(tmp_path)
    artifact = folder / _golden()["artifact"]["file"]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    artifact.write_bytes(bytes(data))
    with pytest.raises(ZooError, match="does not match its manifest"):
        verify_artifact(folder)


def test_a_manifest_whose_sha256_is_wrong_is_refused(tmp_path):
    folder = _export_folder(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifact"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ZooError, match="sha256"):
        verify_artifact(folder)


def test_a_missing_or_foreign_artifact_is_refused(tmp_path):
    folder = _export_folder(tmp_path)
    stranger = folder / "other.pte"
    stranger.write_bytes(b"x")
    with pytest.raises(ZooError, match="not the artifact"):
        verify_artifact(stranger)
    (folder / _golden()["artifact"]["file"]).unlink()
    with pytest.raises(ZooError, match="missing"):
        verify_artifact(folder)


def test_tensor_spec_matches_the_schema():
    spec = mf.tensor_spec("input", (1, 64, 64, 3), dtype="int8", layout="NHWC",
                          quantization={"scale": 1 / 255, "zero_point": -128})
    manifest = _golden()
    manifest["inputs"] = [spec]
    assert mf.manifest_errors(manifest, use_jsonschema=False) == []
    assert spec["shape"] == [1, 64, 64, 3] and spec["quantization"] == {"scale": 1 / 255, "zero_point": -128}


def test_unknown_target_lists_the_valid_ones():
    from export_mobile.targets import get_target, target_names

    with pytest.raises(ZooError, match="unknown export target 'tflight'") as err:
        get_target("tflight")
    for name in target_names():
        assert name in str(err.value)


def test_a_target_whose_module_is_missing_reports_itself_unavailable(monkeypatch):
    from export_mobile import targets

    monkeypatch.setitem(targets.TARGET_MODULES, "made-up-target", "export_mobile.targets.no_such_module")
    monkeypatch.setattr(targets, "_CACHE", {})
    target = targets.get_target("made-up-target")
    assert "not part of this installation" in target.available()
    with pytest.raises(ZooError, match="unavailable"):
        target.export(None)
    rows = {row["name"]: row for row in targets.list_targets()}
    assert rows["made-up-target"]["available"] == target.available()


def test_target_modules_follow_the_registry_convention():
    """Every target module that imports defines its targets under their registered names."""
    from export_mobile.targets import get_target, target_names

    for name in target_names():
        target = get_target(name)
        assert target.name == name
        assert target.suffix in (".pte", ".mlpackage", ".tflite", ".onnx")
        if "does not define" in (target.available() or ""):
            pytest.fail(target.available())
