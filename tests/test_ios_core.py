"""Consistency checks of the iOS demo (ios_demo/) that can be made from Linux.

There is no Swift toolchain here, so nothing below compiles or runs Swift: the Swift package's own
XCTest suite (`swift test` in ios_demo/ZooCore, on a Mac) does that. These tests check what a
compile would not, or what can be checked without one:

* Package.swift and project.yml exist and name targets, folders, scripts and packages that exist;
* every JSON key the Swift Codable models use (their `case swiftName = "json_key"` CodingKeys)
  exists in the manifest / results JSON Schemas, at the schema object each model names in its
  `// json-schema-read:` / `// json-schema-write:` line; properties match their CodingKeys (as
  Swift's synthesised Codable requires); non-Optional properties are required by the schema and
  nullable fields are Optional; the models the app writes (results) cover every required field;
* the Swift enums of schema values list exactly the values the schema allows;
* the constants the Swift side writes (format names and versions, record kind, host kinds) are
  the schema's;
* the golden values in the Swift tests (output hash, tree sha256, percentiles) are what the
  Python reference computes.

The Swift sources follow conventions that make this parse reliable (see the header of
ios_demo/ZooCore/Sources/ZooCore/Manifest.swift); a test fails with the rule that was broken.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IOS = ROOT / "ios_demo"
CORE = IOS / "ZooCore"
SOURCES = CORE / "Sources" / "ZooCore"
TESTS = CORE / "Tests" / "ZooCoreTests"
APP = IOS / "ZooDemo"
SCHEMAS = ROOT / "export_mobile" / "schemas"

ANNOTATION = re.compile(r"^\s*//\s*json-schema-(read|write|enum):\s*(\S+)\s*$")
DECLARATION = re.compile(r"\b(struct|enum)\s+(\w+)")
CODING_CASE = re.compile(r'^\s*case\s+(\w+)\s*=\s*"([^"]*)"\s*$')
BARE_CASE = re.compile(r"^\s*case\s+\w+")
PROPERTY = re.compile(r"^\s*(?:public\s+|internal\s+|private\s+|fileprivate\s+)?(?:let|var)\s+(\w+)\s*:\s*([^={]+?)\s*(?:=.*)?$")


# --------------------------------------------------------------------------------------------
# A small Swift reader: annotated declarations, their bodies, CodingKeys, stored properties
# --------------------------------------------------------------------------------------------


def _strip_strings_and_comments(line: str) -> str:
    """The line with string literals emptied and // comments removed (for brace counting)."""
    out, i, in_string = [], 0, False
    while i < len(line):
        char = line[i]
        if in_string:
            if char == "\\":
                i += 2
                continue
            if char == '"':
                in_string = False
                out.append('"')
        elif char == '"':
            in_string = True
            out.append('"')
        elif line.startswith("//", i):
            break
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _body_lines(lines: list[str], start: int) -> tuple[list[tuple[int, str]], int]:
    """Lines of the declaration starting at line ``start`` (its `{` on that line or a later
    one), each with its brace depth relative to the body (1 = directly inside); and the index of
    the closing line."""
    depth, opened, body = 0, False, []
    for index in range(start, len(lines)):
        code = _strip_strings_and_comments(lines[index])
        line_depth = depth
        for char in code:
            if char == "{":
                depth += 1
                opened = True
            elif char == "}":
                depth -= 1
        if opened and index > start:
            body.append((line_depth, lines[index]))
        if opened and depth == 0:
            return body, index
    raise AssertionError(f"unbalanced braces after line {start + 1}")


def _swift_declarations(path: Path) -> list[dict]:
    """Every annotated struct/enum of a Swift file with its CodingKeys, properties and cases."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for index, line in enumerate(lines):
        match = ANNOTATION.match(line)
        if not match:
            continue
        verb, pointer = match.groups()
        declaration_line = index + 1
        while declaration_line < len(lines) and (
            not lines[declaration_line].strip() or lines[declaration_line].strip().startswith("//")
        ):
            declaration_line += 1
        declared = DECLARATION.search(lines[declaration_line])
        assert declared, f"{path.name}:{index + 1}: the json-schema line must be followed by a struct or enum"
        kind, name = declared.groups()
        assert (verb == "enum") == (kind == "enum"), f"{path.name}: {name}: json-schema-{verb} on a {kind}"
        body, _ = _body_lines(lines, declaration_line)
        item = {"file": path.name, "verb": verb, "pointer": pointer, "kind": kind, "name": name,
                "coding_keys": None, "properties": {}, "cases": {}, "bare_cases": []}
        if kind == "struct":
            _read_struct(item, body)
        else:
            for depth, text in body:
                if depth != 1:
                    continue
                case = CODING_CASE.match(text)
                if case:
                    item["cases"][case.group(1)] = case.group(2)
                elif BARE_CASE.match(text):
                    item["bare_cases"].append(text.strip())
        found.append(item)
    return found


def _read_struct(item: dict, body: list[tuple[int, str]]) -> None:
    in_keys = False
    keys: dict[str, str] = {}
    for depth, text in body:
        stripped = text.strip()
        if depth == 1 and re.match(r"^(?:\w+\s+)*enum\s+CodingKeys\s*:\s*String\s*,\s*CodingKey\s*\{", stripped):
            in_keys = True
            item["coding_keys"] = keys
            continue
        if in_keys:
            if depth == 2 and stripped.startswith("}"):  # the line closing CodingKeys
                in_keys = False
                continue
            case = CODING_CASE.match(text)
            if case:
                keys[case.group(1)] = case.group(2)
            elif BARE_CASE.match(text):
                item["bare_cases"].append(stripped)
            continue
        if depth == 1 and "static " not in text and "{" not in _strip_strings_and_comments(text):
            prop = PROPERTY.match(_strip_strings_and_comments(text))
            if prop:
                item["properties"][prop.group(1)] = prop.group(2).strip()


def _all_declarations() -> list[dict]:
    return [item for path in sorted(SOURCES.glob("*.swift")) for item in _swift_declarations(path)]


# --------------------------------------------------------------------------------------------
# The schemas
# --------------------------------------------------------------------------------------------

_SCHEMA_CACHE: dict[str, dict] = {}


def _schema(file_name: str) -> dict:
    if file_name not in _SCHEMA_CACHE:
        _SCHEMA_CACHE[file_name] = json.loads((SCHEMAS / file_name).read_text(encoding="utf-8"))
    return _SCHEMA_CACHE[file_name]


def _walk(root: dict, fragment: str):
    node = root
    if fragment in ("", "#"):
        return node
    assert fragment.startswith("#/"), f"only local pointers are used, got {fragment}"
    for part in fragment[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _resolve(root: dict, node):
    while isinstance(node, dict) and "$ref" in node:
        node = _walk(root, node["$ref"])
    return node


def _node(pointer: str):
    file_name, _, fragment = pointer.partition("#")
    root = _schema(file_name)
    return root, _resolve(root, _walk(root, "#" + fragment))


def _nullable(root: dict, node) -> bool:
    node = _resolve(root, node)
    types = node.get("type")
    if types == "null" or (isinstance(types, list) and "null" in types):
        return True
    return "enum" in node and None in node["enum"]


def _swift_type_name(swift_type: str) -> tuple[str, bool, bool]:
    """(element type name, optional, array) of a Swift property type like `[TensorSpec]?`."""
    optional = swift_type.endswith("?")
    core = swift_type.rstrip("?").strip()
    is_array = core.startswith("[") and core.endswith("]") and ":" not in core
    if is_array:
        core = core[1:-1].strip()
    return core, optional, is_array


# --------------------------------------------------------------------------------------------
# Package and project
# --------------------------------------------------------------------------------------------


def test_swift_package_names_existing_targets():
    package = (CORE / "Package.swift").read_text(encoding="utf-8")
    assert package.startswith("// swift-tools-version:5.9")
    assert 'name: "ZooCore"' in package
    assert ".iOS(.v17)" in package and ".macOS(.v14)" in package
    assert re.search(r'\.library\(name:\s*"ZooCore",\s*targets:\s*\["ZooCore"\]\)', package)
    assert re.search(r'\.testTarget\(\s*name:\s*"ZooCoreTests"', package)
    for path in re.findall(r'path:\s*"([^"]+)"', package):
        assert (CORE / path).is_dir(), f"Package.swift names {path}, which does not exist"
    assert sorted(SOURCES.glob("*.swift")), "no sources in Sources/ZooCore"
    for name in ("Manifest.swift", "TilePlan.swift", "Tiler.swift", "Benchmark.swift", "Results.swift"):
        assert (SOURCES / name).is_file(), name
    tests = sorted(TESTS.glob("*Tests.swift"))
    assert len(tests) >= 4
    for test in tests:
        text = test.read_text(encoding="utf-8")
        assert "import XCTest" in text and "@testable import ZooCore" in text, test.name


def test_zoocore_has_no_ui_or_runtime_dependency():
    for path in SOURCES.glob("*.swift"):
        imports = set(re.findall(r"^import\s+(\w+)", path.read_text(encoding="utf-8"), flags=re.M))
        assert imports <= {"Foundation", "CryptoKit", "Dispatch"}, f"{path.name} imports {imports}"


def test_project_yml_names_what_exists():
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((IOS / "project.yml").read_text(encoding="utf-8"))
    assert spec["name"] == "ZooDemo"
    packages = spec["packages"]
    assert (IOS / packages["ZooCore"]["path"] / "Package.swift").is_file()
    executorch = packages["executorch"]
    assert executorch["url"] == "https://github.com/pytorch/executorch"
    assert re.fullmatch(r"swiftpm-1\.\d+\.\d+(\.\d{8})?", executorch["branch"]), executorch["branch"]
    target = spec["targets"]["ZooDemo"]
    assert target["type"] == "application" and target["platform"] == "iOS"
    assert str(target["deploymentTarget"]) == "17.0"
    for source in target["sources"]:
        assert (IOS / source["path"]).is_dir()
    dependencies = target["dependencies"]
    assert {"package": "ZooCore"} in dependencies
    products = next(d for d in dependencies if d.get("package") == "executorch")["products"]
    assert {"executorch", "backend_xnnpack", "backend_coreml"} <= set(products)
    info = target["info"]["properties"]
    assert info["UIFileSharingEnabled"] is True and info["LSSupportsOpeningDocumentsInPlace"] is True
    assert info["NSCameraUsageDescription"] and info["NSPhotoLibraryAddUsageDescription"]
    assert "-all_load" in target["settings"]["base"]["OTHER_LDFLAGS"]
    for script in target["postCompileScripts"]:
        path = IOS / script["path"]
        assert path.is_file() and path.stat().st_mode & 0o111, f"{path} missing or not executable"
    # The runtime version written to results files follows the package branch.
    et_swift = (APP / "Runtimes" / "ExecuTorchTileModel.swift").read_text(encoding="utf-8")
    version = re.search(r'static let version = "([^"]+)"', et_swift).group(1)
    assert executorch["branch"].startswith(f"swiftpm-{version}"), (executorch["branch"], version)
    # The launch argument of the scheme is the one LaunchOptions parses.
    arguments = " ".join(target["scheme"]["commandLineArguments"])
    assert "-benchmark" in arguments


def test_app_sources_import_executorch_only_when_available():
    for path in APP.rglob("*.swift"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if re.match(r"^import\s+ExecuTorch\b", line):
                preceding = "\n".join(lines[:index])
                assert "#if canImport(ExecuTorch)" in preceding, f"{path.name}:{index + 1}: unguarded import"
            if re.match(r"^import\s+", line):
                module = line.split()[1]
                assert module in {"SwiftUI", "UIKit", "CoreML", "CoreVideo", "CoreGraphics", "ImageIO", "Foundation",
                                  "Photos", "PhotosUI", "Observation", "Metal", "Darwin", "os",
                                  "UniformTypeIdentifiers", "ZooCore", "ExecuTorch"}, f"{path.name} imports {module}"


def test_bundle_script_hashes_folders_like_python(tmp_path):
    """The build script's tree sha256 (shell) equals export_mobile.manifest.sha256_of."""
    import shutil
    import subprocess

    if shutil.which("shasum") is None:
        pytest.skip("shasum is not installed")
    from export_mobile.manifest import sha256_of

    package = tmp_path / "m.mlpackage"
    (package / "sub" / "c").mkdir(parents=True)
    (package / "a.txt").write_bytes(b"hello\n")
    (package / "Z.txt").write_bytes(b"")
    (package / "a b.txt").write_bytes(b"space")
    (package / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (package / "sub" / "c" / "d.txt").write_bytes(b"deep\n")
    (package / "sub" / "\u00e9.txt").write_bytes(b"x")
    script = (IOS / "scripts" / "bundle_models.sh").read_text(encoding="utf-8")
    functions = script[script.index("file_sha256() {"):script.index("manifest_field() {")]
    result = subprocess.run(["sh", "-c", functions + '\ntree_sha256 "$1"', "sh", str(package)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == sha256_of(package)[0]


# --------------------------------------------------------------------------------------------
# Codable models against the schemas
# --------------------------------------------------------------------------------------------


def test_every_codable_model_is_annotated():
    declared = _all_declarations()
    names = {item["name"] for item in declared}
    for path in SOURCES.glob("*.swift"):
        text = path.read_text(encoding="utf-8")
        coding_keys = len(re.findall(r"enum\s+CodingKeys\s*:", text))
        annotated_structs = sum(1 for item in declared if item["file"] == path.name and item["kind"] == "struct")
        assert coding_keys == annotated_structs, f"{path.name}: a struct with CodingKeys lacks a json-schema line"
        for enum in re.findall(r"enum\s+(\w+)\s*:\s*String\s*,\s*CaseIterable\s*,\s*Codable", text):
            assert enum in names, f"{path.name}: Codable enum {enum} lacks a json-schema-enum line"
    assert {"Manifest", "TensorSpec", "TilingSpec", "ManifestArtifact", "ManifestBackend", "ResultsDocument",
            "ResultRecord", "ResultHost", "ResultRuntime", "ResultLatency", "ResultImage"} <= names


@pytest.mark.parametrize("item", _all_declarations(), ids=lambda item: item["name"])
def test_swift_model_matches_schema(item):
    root, node = _node(item["pointer"])
    where = f"{item['file']}: {item['name']} ({item['pointer']})"
    assert not item["bare_cases"], f"{where}: write one `case name = \"json_key\"` per line: {item['bare_cases']}"
    if item["kind"] == "enum":
        assert "enum" in node, f"{where}: the schema node has no enum"
        # x-aliases: older spellings the schema still accepts; the app reads them as the value they
        # name (a `static let aliases` table), it has no case of its own for them.
        aliases = node.get("x-aliases", {})
        schema_values = {value for value in node["enum"] if value is not None} - set(aliases)
        assert set(item["cases"].values()) == schema_values, f"{where}: Swift {sorted(item['cases'].values())} vs schema {sorted(schema_values)}"
        if aliases:
            source = (SOURCES / item["file"]).read_text(encoding="utf-8")
            swift_case = {value: name for name, value in item["cases"].items()}
            for alias, value in aliases.items():
                assert f'"{alias}": .{swift_case[value]}' in source, f"{where}: alias {alias!r} is not read as {value!r}"
        return

    keys = item["coding_keys"]
    assert keys is not None, f"{where}: no `enum CodingKeys: String, CodingKey`"
    properties = node.get("properties", {})
    required = set(node.get("required", []))
    unknown = set(keys.values()) - set(properties)
    assert not unknown, f"{where}: JSON keys not in the schema: {sorted(unknown)}"
    assert set(keys) == set(item["properties"]), (
        f"{where}: stored properties {sorted(item['properties'])} differ from CodingKeys cases {sorted(keys)}")
    for swift_name, json_key in keys.items():
        swift_type = item["properties"][swift_name]
        type_name, optional, is_array = _swift_type_name(swift_type)
        if not optional:
            assert json_key in required, f"{where}: {swift_name} is not Optional but {json_key!r} is not required"
        if _nullable(root, properties[json_key]):
            assert optional, f"{where}: {json_key!r} may be null, so {swift_name} must be Optional"
        # A property of another annotated model type models exactly that schema object.
        target = next((other for other in _all_declarations() if other["name"] == type_name), None)
        if target is not None:
            prop_node = _resolve(root, properties[json_key])
            if is_array:
                assert prop_node.get("type") == "array", f"{where}: {json_key!r} is not an array in the schema"
                prop_node = _resolve(root, prop_node["items"])
            _, target_node = _node(target["pointer"])
            assert prop_node is target_node, (
                f"{where}: {json_key!r} is modelled by {type_name} ({target['pointer']}), another schema object")
    if item["verb"] == "write":
        missing = required - set(keys.values())
        assert not missing, f"{where}: the app writes this object without required {sorted(missing)}"
        for swift_name, json_key in keys.items():
            if json_key in required:
                assert not item["properties"][swift_name].endswith("?"), (
                    f"{where}: {swift_name} is Optional, but the app must always write {json_key!r}")


def test_results_writer_constants_and_device_record():
    results_schema = _schema("results.schema.json")
    manifest_schema = _schema("manifest.schema.json")
    benchmark = (SOURCES / "Benchmark.swift").read_text(encoding="utf-8")
    manifest = (SOURCES / "Manifest.swift").read_text(encoding="utf-8")
    assert f'static let format = "{results_schema["properties"]["format"]["const"]}"' in benchmark
    assert f'static let formatVersion = {results_schema["properties"]["format_version"]["const"]}' in benchmark
    assert f'static let formatName = "{manifest_schema["properties"]["format"]["const"]}"' in manifest
    assert f'static let supportedFormatVersion = {manifest_schema["properties"]["format_version"]["const"]}' in manifest
    # deviceRecord fills every field a record requires, with kind "device".
    start = benchmark.index("public static func deviceRecord(")
    body = benchmark[start:benchmark.index("\n    }\n", start)]
    record = results_schema["$defs"]["record"]
    declared = {item["name"]: item for item in _all_declarations()}
    keys = declared["ResultRecord"]["coding_keys"]
    for json_key in record["required"]:
        swift_name = next(name for name, key in keys.items() if key == json_key)
        assert re.search(rf"\b{swift_name}:", body), f"deviceRecord does not set {json_key}"
    assert "kind: .device" in body and "device" in record["properties"]["kind"]["enum"]
    assert "per: .tile" in body
    # The host kinds the app writes.
    device_info = (APP / "DeviceInfo.swift").read_text(encoding="utf-8")
    assert ".tablet : .phone" in device_info and 'os: "iOS"' in device_info
    assert {"phone", "tablet"} <= set(results_schema["$defs"]["host"]["properties"]["kind"]["enum"])
    # Runtime names the app writes.
    assert {"coreml", "executorch"} == set(re.findall(r'case \w+ = "(coreml|executorch)"', manifest))


def test_swift_copies_the_manifest_provenance_into_the_results():
    """deviceRecord writes the manifest's quantization.provenance as artifact.quantization, and the
    provenance checks (QuantizationProvenance) list the schema's methods and required keys; the
    Android core does the same (tests/test_android_core.py runs it)."""
    results_schema = _schema("results.schema.json")
    provenance = results_schema["$defs"]["provenance"]
    assert provenance == _schema("manifest.schema.json")["$defs"]["provenance"]
    manifest = (SOURCES / "Manifest.swift").read_text(encoding="utf-8")
    body = manifest[manifest.index("public enum QuantizationProvenance {"):]
    listed = {name: re.findall(r'"([^"]+)"', re.search(rf"static let {name} = \[([^\]]*)\]", body).group(1))
              for name in ("methods", "requiredKeys")}
    assert listed["methods"] == provenance["properties"]["method"]["enum"]
    assert listed["requiredKeys"] == provenance["required"]
    benchmark = (SOURCES / "Benchmark.swift").read_text(encoding="utf-8")
    start = benchmark.index("public static func deviceRecord(")
    assert "quantization: manifest.quantization?.provenance" in benchmark[start:benchmark.index("\n    }\n", start)]
    declared = {item["name"]: item for item in _all_declarations()}
    assert declared["ResultArtifact"]["coding_keys"]["quantization"] == "quantization"
    assert declared["ManifestQuantization"]["coding_keys"]["provenance"] == "provenance"
    results = (SOURCES / "Results.swift").read_text(encoding="utf-8")
    assert 'QuantizationProvenance.problems(provenance, at: "\\(at).artifact.quantization")' in results


def test_swift_tests_read_repository_files_that_exist():
    for path in TESTS.glob("*.swift"):
        for relative in re.findall(r'"(tests/data/[^"\\]+)"', path.read_text(encoding="utf-8")):
            if relative.startswith("tests/data/tiling/"):
                continue  # golden tile plans: the Swift test skips while they are missing
            assert (ROOT / relative).exists(), f"{path.name} reads {relative}, which does not exist"
        for name in re.findall(r'load\("([\w.-]+\.json)"\)', path.read_text(encoding="utf-8")):
            assert (ROOT / "tests" / "data" / "manifests" / name).is_file(), name


def test_swift_tile_plan_test_decodes_every_field_of_the_golden_plans():
    """TilePlanTests.swift checks every case of tests/data/tiling/plans.json (scales 1-4): its
    GoldenPlan decodes exactly the file's keys, and it passes each case's scale to axisWeights."""
    source = (TESTS / "TilePlanTests.swift").read_text(encoding="utf-8")
    assert 'RepoFiles.data("tests/data/tiling/plans.json")' in source
    body = source[source.index("struct GoldenPlan"):source.index("final class TilePlanTests")]
    keys = [match.group(2) for match in map(CODING_CASE.match, body.splitlines()) if match]
    golden = json.loads((ROOT / "tests" / "data" / "tiling" / "plans.json").read_text(encoding="utf-8"))
    assert all(list(case) == keys for case in golden), keys
    assert {2, 3, 4} <= {case["scale"] for case in golden}
    assert "plan.axisWeights(.rows, scale: scale)" in source and "plan.axisWeights(.cols, scale: scale)" in source


# --------------------------------------------------------------------------------------------
# Golden values of the Swift tests, recomputed with the Python reference
# --------------------------------------------------------------------------------------------


def _swift_test(name: str) -> str:
    return (TESTS / name).read_text(encoding="utf-8")


def test_swift_output_hash_golden_matches_python():
    torch = pytest.importorskip("torch")
    from measure.results import output_sha256

    image = torch.empty(3, 5, 7, dtype=torch.float32)
    for c in range(3):
        for y in range(5):
            for x in range(7):
                image[c, y, x] = ((c * 97 + y * 31 + x * 13) * 2 - 50) / 512
    image[0, 0, 0] = 256 / 512
    expected = re.search(r'outputSHA256\(image\), "([0-9a-f]{64})"', _swift_test("TilerTests.swift")).group(1)
    assert output_sha256(image) == expected


def test_swift_tree_sha256_golden_matches_python(tmp_path):
    from export_mobile.manifest import sha256_of

    package = tmp_path / "m.mlpackage"
    (package / "sub" / "c").mkdir(parents=True)
    (package / "a.txt").write_bytes(b"hello\n")
    (package / "Z.txt").write_bytes(b"")
    (package / "a b.txt").write_bytes(b"space")
    (package / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (package / "sub" / "c" / "d.txt").write_bytes(b"deep\n")
    text = _swift_test("ManifestTests.swift")
    tree, tree_bytes = re.search(r'tree\.sha256, "([0-9a-f]{64})"\)\s*\n\s*XCTAssertEqual\(tree\.bytes, (\d+)\)', text).groups()
    single = re.search(r'file\.sha256, "([0-9a-f]{64})"', text).group(1)
    assert sha256_of(package) == (tree, "tree", int(tree_bytes))
    assert sha256_of(package / "a.txt")[0] == single == hashlib.sha256(b"hello\n").hexdigest()


def test_swift_percentile_goldens_match_numpy():
    numpy = pytest.importorskip("numpy")
    text = _swift_test("BenchmarkTests.swift")
    times = [float(v) for v in re.search(r"let times = \[([^\]]+)\]", text).group(1).split(",")]
    p90 = float(re.search(r"percentile\(times, 90\), ([0-9.e-]+)\)", text).group(1))
    p50 = float(re.search(r"percentile\(times, 50\), ([0-9.e-]+)\)", text).group(1))
    p90_of_7 = float(re.search(r"percentile\(Array\(times\.prefix\(7\)\), 90\), ([0-9.e-]+)\)", text).group(1))
    assert float(numpy.percentile(times, 90, method="linear")) == p90
    assert float(numpy.percentile(times, 50, method="linear")) == p50
    assert float(numpy.percentile(times[:7], 90, method="linear")) == p90_of_7


def test_docs_are_honest_about_the_build():
    text = (ROOT / "docs" / "ios.md").read_text(encoding="utf-8")
    assert "not compiled" in text.lower()
    for needle in ("xcodegen", "zoo device import", "-benchmark", "swift test", "results.json", "macOS"):
        assert needle in text, needle


def test_swift_sources_parse():
    """A syntax check only (tree-sitter's Swift grammar, from the `test` extra, so CI runs it; it
    skips without `pip install tree-sitter tree-sitter-swift`); it knows nothing of types or APIs."""
    tree_sitter = pytest.importorskip("tree_sitter")
    swift = pytest.importorskip("tree_sitter_swift")
    parser = tree_sitter.Parser(tree_sitter.Language(swift.language()))
    problems = []
    for path in sorted(IOS.rglob("*.swift")):
        source = path.read_bytes()
        stack = [parser.parse(source).root_node]
        while stack:
            node = stack.pop()
            if node.type == "ERROR" or node.is_missing:
                problems.append(f"{path.relative_to(ROOT)}:{node.start_point[0] + 1}: "
                                f"{'missing ' + node.type if node.is_missing else 'syntax error'}")
            stack.extend(node.children)
    assert not problems, "\n".join(problems)
