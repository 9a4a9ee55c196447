import XCTest
@testable import ZooCore

final class ManifestTests: XCTestCase {
    /// Every golden manifest of tests/data/manifests (the same files the Python and Android
    /// tests read) decodes and passes the app's checks.
    func testGoldenManifestsParse() throws {
        let files = try RepoFiles.jsonFiles(in: "tests/data/manifests")
        XCTAssertGreaterThanOrEqual(files.count, 4, "expected the golden manifests in tests/data/manifests")
        for file in files {
            let manifest = try Manifest.decode(Data(contentsOf: file), source: file.lastPathComponent)
            XCTAssertEqual(manifest.formatVersion, 1, file.lastPathComponent)
            XCTAssertEqual(manifest.inputs.count, 1, file.lastPathComponent)
            XCTAssertNoThrow(try Tiler(manifest: manifest), file.lastPathComponent)
        }
    }

    func testExecuTorchXnnpackInt8Manifest() throws {
        let manifest = try load("executorch-xnnpack-int8.json")
        XCTAssertEqual(manifest.model.name, "hinet-lite")
        XCTAssertEqual(manifest.model.task, .denoise)
        XCTAssertEqual(manifest.artifact.format, .pte)
        XCTAssertEqual(manifest.artifact.sha256Method, .file)
        XCTAssertEqual(manifest.backend.runtime, .executorch)
        XCTAssertEqual(manifest.backend.delegate, "XnnpackBackend")
        XCTAssertEqual(manifest.backend.partitions, 1)
        XCTAssertEqual(manifest.precision, .int8)
        XCTAssertEqual(manifest.quantization?.method, .ptq)
        XCTAssertEqual(manifest.inputs[0].shape, [1, 3, 256, 256])
        XCTAssertEqual(manifest.inputs[0].layout, .nchw)
        XCTAssertEqual(manifest.inputs[0].dtype, .float32)
        XCTAssertEqual(manifest.tiling.tile, [256, 256])
        XCTAssertEqual(manifest.tiling.overlap, 32)
        XCTAssertEqual(manifest.tiling.margin, 16)
        XCTAssertEqual(manifest.tiling.sizeMultiple, 16)
        XCTAssertEqual(manifest.tiling.padMode, .reflect)
        XCTAssertEqual(manifest.verification?.ran, true)
        XCTAssertEqual(try manifest.appRuntime(), .executorch)
    }

    func testCoreMLManifest() throws {
        let manifest = try load("coreml-fp16.json")
        XCTAssertEqual(manifest.artifact.format, .mlpackage)
        XCTAssertEqual(manifest.artifact.sha256Method, .tree)
        XCTAssertEqual(manifest.precision, .fp16)
        XCTAssertNil(manifest.quantization)
        XCTAssertNil(manifest.backend.delegate)
        XCTAssertEqual(manifest.computeUnits, .all)  // "ALL" in the manifest
        XCTAssertEqual(manifest.verification?.ran, false)
        XCTAssertNil(manifest.verification?.maxAbsError)
        XCTAssertEqual(try manifest.appRuntime(), .coreml)
    }

    func testTFLiteManifestHasInt8NHWCButNoIOSRuntime() throws {
        let manifest = try load("tflite-int8-nhwc.json")
        let input = manifest.inputs[0]
        XCTAssertEqual(input.layout, .nhwc)
        XCTAssertEqual(input.dtype, .int8)
        XCTAssertEqual(input.quantization?.zeroPoint, -128)
        XCTAssertEqual(input.quantization?.scale ?? 0, 1.0 / 255.0, accuracy: 1e-12)
        XCTAssertThrowsError(try manifest.appRuntime()) { error in
            XCTAssertTrue("\(error)".contains("Core ML and ExecuTorch"), "\(error)")
        }
    }

    func testSuperResolutionManifest() throws {
        let manifest = try load("onnx-fp32-sr-x4.json")
        XCTAssertEqual(manifest.model.task, .superResolution)  // the file's older alias "sr"
        XCTAssertEqual(manifest.model.scale, 4)
        XCTAssertEqual(manifest.outputs[0].shape, [1, 3, 256, 256])
        XCTAssertEqual(try Tiler(manifest: manifest).tileOutputSide, 256)
        XCTAssertEqual(manifest.model.task.rawValue, "super-resolution")  // what results files get
    }

    // MARK: - Refusals with clear messages

    func testNewerFormatVersionIsRefusedByName() throws {
        var object = try goldenObject("executorch-xnnpack-int8.json")
        object["format_version"] = 2
        XCTAssertThrowsError(try decode(object)) { error in
            XCTAssertTrue("\(error)".contains("format_version 2, newer than this app understands (1)"), "\(error)")
        }
    }

    func testNotAManifest() {
        XCTAssertThrowsError(try Manifest.decode(Data("{\"format\": \"zoo-results\"}".utf8))) { error in
            XCTAssertTrue("\(error)".contains("is not a zoo export manifest"), "\(error)")
        }
        XCTAssertThrowsError(try Manifest.decode(Data("not json".utf8)))
    }

    func testUnknownDtypeNamesTheFieldAndTheValidValues() throws {
        var object = try goldenObject("executorch-xnnpack-int8.json")
        var inputs = object["inputs"] as! [[String: Any]]
        inputs[0]["dtype"] = "bfloat16"
        object["inputs"] = inputs
        XCTAssertThrowsError(try decode(object)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("inputs[0].dtype"), text)
            XCTAssertTrue(text.contains("'bfloat16' is not one of 'float32', 'float16', 'int8', 'uint8'"), text)
        }
    }

    func testMissingFieldIsNamed() throws {
        var object = try goldenObject("executorch-xnnpack-int8.json")
        var tiling = object["tiling"] as! [String: Any]
        tiling.removeValue(forKey: "size_multiple")
        object["tiling"] = tiling
        XCTAssertThrowsError(try decode(object)) { error in
            XCTAssertTrue("\(error)".contains("field tiling.size_multiple is missing"), "\(error)")
        }
    }

    func testNonSquareTileIsRefused() throws {
        var object = try goldenObject("executorch-xnnpack-int8.json")
        var tiling = object["tiling"] as! [String: Any]
        tiling["tile"] = [256, 128]
        object["tiling"] = tiling
        XCTAssertThrowsError(try decode(object)) { error in
            XCTAssertTrue("\(error)".contains("is not a square"), "\(error)")
        }
    }

    func testShapeThatDoesNotMatchTheTileIsRefused() throws {
        var object = try goldenObject("onnx-fp32-sr-x4.json")
        var outputs = object["outputs"] as! [[String: Any]]
        outputs[0]["shape"] = [1, 3, 64, 64]  // scale 4 needs 256
        object["outputs"] = outputs
        XCTAssertThrowsError(try decode(object)) { error in
            XCTAssertTrue("\(error)".contains("outputs[0].shape"), "\(error)")
        }
    }

    func testInt8WithoutQuantizationIsRefused() throws {
        var object = try goldenObject("tflite-int8-nhwc.json")
        var inputs = object["inputs"] as! [[String: Any]]
        inputs[0]["quantization"] = NSNull()
        object["inputs"] = inputs
        XCTAssertThrowsError(try decode(object)) { error in
            XCTAssertTrue("\(error)".contains("without a positive quantization.scale"), "\(error)")
        }
    }

    // MARK: - Quantization provenance (copied into the results; the Android core's test does the same)

    func testProvenanceIsKeptWhole() throws {
        let provenance = try XCTUnwrap(try load("executorch-xnnpack-int8.json").quantization?.provenance)
        XCTAssertEqual(provenance["method"], .string("ptq"))
        XCTAssertEqual(provenance["mixed"], .string("none"))
        XCTAssertEqual(provenance["steps"], .null)
        XCTAssertEqual(provenance["options"], .object([:]))
        XCTAssertEqual(provenance["calibration"]?.objectCase?["images"], .int(32))
        XCTAssertEqual(Set(provenance.keys), Set(QuantizationProvenance.requiredKeys))
        XCTAssertTrue(QuantizationProvenance.problems(provenance, at: "p").isEmpty)
        // Written before the record existed: none, and the manifest is still valid.
        XCTAssertNil(try load("tflite-int8-nhwc.json").quantization?.provenance)
        // A key the app does not know (a later zoo) is kept, not refused.
        var object = try goldenObject("executorch-xnnpack-int8.json")
        var quantization = object["quantization"] as! [String: Any]
        var record = quantization["provenance"] as! [String: Any]
        record["later_key"] = [1, 2]
        quantization["provenance"] = record
        object["quantization"] = quantization
        XCTAssertEqual(try decode(object).quantization?.provenance?["later_key"], .array([.int(1), .int(2)]))
    }

    func testBrokenProvenanceIsRefusedNamingTheField() throws {
        let cases: [(key: String, value: Any?, words: String)] = [
            ("method", "gptq", "quantization.provenance.method: 'gptq' is not one of ptq, qat, target"),
            ("steps", nil, "quantization.provenance.steps is missing"),
            ("steps", -1, "quantization.provenance.steps: -1 is not an integer >= 0 or null"),
            ("options", NSNull(), "quantization.provenance.options: null is not an object"),
            ("calibration", ["images": 3], "quantization.provenance.calibration.data: must be a non-empty string"),
        ]
        for (key, value, words) in cases {
            var object = try goldenObject("executorch-xnnpack-int8.json")
            var quantization = object["quantization"] as! [String: Any]
            var record = quantization["provenance"] as! [String: Any]
            record[key] = value  // nil removes the key
            quantization["provenance"] = record
            object["quantization"] = quantization
            XCTAssertThrowsError(try decode(object), key) { error in
                XCTAssertTrue("\(error)".contains(words), "\(error)")
            }
        }
    }

    func testComputeUnitsAnyCase() {
        XCTAssertEqual(ComputeUnitsOption(manifestValue: "cpu_and_ne"), .cpuAndNeuralEngine)
        XCTAssertEqual(ComputeUnitsOption(manifestValue: "CPU_ONLY"), .cpuOnly)
        XCTAssertEqual(ComputeUnitsOption(manifestValue: "Cpu_And_Gpu"), .cpuAndGPU)
        XCTAssertNil(ComputeUnitsOption(manifestValue: "npu"))
    }

    // MARK: - sha256 (export_mobile.manifest.sha256_of)

    /// The digests below were computed with export_mobile.manifest.sha256_of on the same files.
    func testTreeAndFileDigestsMatchPython() throws {
        let folder = try RepoFiles.temporaryFolder(self)
        let package = folder.appendingPathComponent("m.mlpackage", isDirectory: true)
        try FileManager.default.createDirectory(at: package.appendingPathComponent("sub/c"), withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: package.appendingPathComponent("a.txt"))
        try Data().write(to: package.appendingPathComponent("Z.txt"))
        try Data("space".utf8).write(to: package.appendingPathComponent("a b.txt"))
        try Data((0...255).map { UInt8($0) }).write(to: package.appendingPathComponent("sub/b.bin"))
        try Data("deep\n".utf8).write(to: package.appendingPathComponent("sub/c/d.txt"))

        let tree = try ArtifactHasher.digest(of: package)
        XCTAssertEqual(tree.method, .tree)
        XCTAssertEqual(tree.sha256, "7ca96eb335a47634322ff50cfbc9b8d4017551f342f66321c07611919a547db5")
        XCTAssertEqual(tree.bytes, 272)

        let file = try ArtifactHasher.digest(of: package.appendingPathComponent("a.txt"))
        XCTAssertEqual(file.method, .file)
        XCTAssertEqual(file.sha256, "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
        XCTAssertEqual(file.bytes, 6)
    }

    func testVerifyArtifactAcceptsTheRightFileAndRefusesAReplacedOne() throws {
        let folder = try RepoFiles.temporaryFolder(self)
        let artifact = Data((0..<5000).map { UInt8($0 % 251) })
        try artifact.write(to: folder.appendingPathComponent("model.pte"))
        var object = try goldenObject("executorch-xnnpack-int8.json")
        var info = object["artifact"] as! [String: Any]
        info["file"] = "model.pte"
        info["bytes"] = artifact.count
        info["sha256"] = ArtifactHasher.sha256(of: artifact)
        object["artifact"] = info
        let manifest = try decode(object)
        XCTAssertEqual(try manifest.verifyArtifact(in: folder).bytes, 5000)

        try Data(artifact.reversed()).write(to: folder.appendingPathComponent("model.pte"))
        XCTAssertThrowsError(try manifest.verifyArtifact(in: folder)) { error in
            XCTAssertTrue("\(error)".contains("corrupted or was replaced"), "\(error)")
        }
        try FileManager.default.removeItem(at: folder.appendingPathComponent("model.pte"))
        XCTAssertThrowsError(try manifest.verifyArtifact(in: folder)) { error in
            XCTAssertTrue("\(error)".contains("is missing"), "\(error)")
        }
    }

    // MARK: - Helpers

    private func load(_ name: String) throws -> Manifest {
        try Manifest.decode(RepoFiles.data("tests/data/manifests/\(name)"), source: name)
    }

    private func goldenObject(_ name: String) throws -> [String: Any] {
        let data = try RepoFiles.data("tests/data/manifests/\(name)")
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    private func decode(_ object: [String: Any]) throws -> Manifest {
        try Manifest.decode(JSONSerialization.data(withJSONObject: object), source: "manifest.json")
    }
}
