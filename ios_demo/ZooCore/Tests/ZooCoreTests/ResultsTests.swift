import XCTest
@testable import ZooCore

final class ResultsTests: XCTestCase {
    /// A device record for a golden manifest of tests/data/manifests (default: the Core ML fp16 one).
    private func sampleRecord(manifest name: String = "coreml-fp16.json") throws -> ResultRecord {
        let manifest = try Manifest.decode(RepoFiles.data("tests/data/manifests/" + name))
        let measurement = BenchmarkMeasurement(
            tile: 256, overlap: 32, scale: 1, configuration: BenchmarkConfiguration(runs: 4, warmup: 1),
            tileTimesMs: [6.4, 6.1, 7.1, 6.6],
            latency: try LatencyStatistics.summarize([6.4, 6.1, 7.1, 6.6]),
            images: [ImageMeasurement(name: "astronaut", height: 512, width: 512, tiles: 9, latencyMs: 61.5,
                                      outputSHA256: String(repeating: "a1", count: 32))],
            peakMemoryMB: 64.0)
        let runtime = ResultRuntime(name: "coreml", version: "iOS 17.5 Core ML", device: "ane", precision: "fp16",
                                    options: ["compute_units": .string("cpu_and_ne")])
        let host = ResultHost(name: "iPhone15,2", kind: .phone, os: "iOS", osVersion: "17.5", cores: 6, gpu: "Apple A16 GPU")
        return ResultsWriter.deviceRecord(manifest: manifest, measurement: measurement, runtime: runtime, host: host,
                                          notes: ["thermal state: nominal"], created: Date(timeIntervalSince1970: 1_795_000_000))
    }

    func testDeviceRecordFields() throws {
        let record = try sampleRecord()
        XCTAssertEqual(record.kind, .device)
        XCTAssertEqual(record.model, "hinet-lite")
        XCTAssertEqual(record.task, .denoise)
        XCTAssertEqual(record.artifact?.sha256, "5e4d3c2b1a0f9e8d7c6b5a49382716f5e4d3c2b1a0f9e8d7c6b5a49382716f5e")
        XCTAssertEqual(record.artifact?.precision, .fp16)
        XCTAssertEqual(record.artifact?.target, "coreml")
        XCTAssertEqual(record.input, ResultInput(height: 256, width: 256, batch: 1, tile: 256, overlap: 32))
        XCTAssertEqual(record.latencyMs?.per, .tile)
        XCTAssertEqual(record.latencyMs?.runs, 4)
        XCTAssertEqual(record.latencyMs?.warmup, 1)
        XCTAssertEqual(record.latencyMs?.timer, "ios_mach_absolute_time")
        XCTAssertEqual(record.latencyMs?.median ?? 0, 6.5, accuracy: 1e-12)
        // 256 * 256 pixels in 6.5 ms
        XCTAssertEqual(record.throughput?.megapixelsPerS ?? 0, 65536 / 1e6 / 0.0065, accuracy: 1e-9)
        XCTAssertEqual(record.complete, true)
        XCTAssertEqual(record.created, "2026-11-18T11:06:40.000Z")
    }

    /// The manifest's quantization.provenance goes into artifact.quantization unchanged, every key
    /// (tests/test_android_core.py checks the Android core the same way); a manifest without one
    /// gives a record without the key (absent: not recorded).
    func testDeviceRecordCopiesTheManifestProvenance() throws {
        let name = "executorch-xnnpack-int8.json"
        let manifest = try Manifest.decode(RepoFiles.data("tests/data/manifests/executorch-xnnpack-int8.json"))
        let record = try sampleRecord(manifest: name)
        XCTAssertNotNil(manifest.quantization?.provenance)
        XCTAssertEqual(record.artifact?.quantization, manifest.quantization?.provenance)
        XCTAssertEqual(record.artifact?.quantization?["method"], .string("ptq"))

        let writer = ResultsWriter()
        let data = try writer.encode(writer.document(records: [record]))
        let written = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let artifact = (written["records"] as! [[String: Any]])[0]["artifact"] as! [String: Any]
        let golden = try JSONSerialization.jsonObject(
            with: RepoFiles.data("tests/data/manifests/executorch-xnnpack-int8.json")) as! [String: Any]
        let expected = (golden["quantization"] as! [String: Any])["provenance"] as! NSDictionary
        XCTAssertEqual(artifact["quantization"] as? NSDictionary, expected)
        XCTAssertEqual(try ResultsWriter.decode(data).records[0].artifact?.quantization, record.artifact?.quantization)

        let float = try sampleRecord()  // Core ML fp16: no quantization
        XCTAssertNil(float.artifact?.quantization)
        let floatData = try writer.encode(writer.document(records: [float]))
        let floatWritten = try JSONSerialization.jsonObject(with: floatData) as! [String: Any]
        let floatArtifact = (floatWritten["records"] as! [[String: Any]])[0]["artifact"] as! [String: Any]
        XCTAssertNil(floatArtifact["quantization"], "left out when the manifest does not say")
    }

    /// The golden Android results file carries the provenance the app copied from its manifest.
    func testGoldenAndroidResultsCarryTheProvenance() throws {
        let data = try RepoFiles.data("tests/data/results/android-executorch-xnnpack-int8.json")
        let document = try ResultsWriter.decode(data, source: "android-executorch-xnnpack-int8.json")
        let manifest = try Manifest.decode(RepoFiles.data("tests/data/manifests/executorch-xnnpack-int8.json"))
        XCTAssertEqual(document.records[0].artifact?.quantization, manifest.quantization?.provenance)
        XCTAssertEqual(document.schemaErrors(), [])
    }

    /// Write, read back, compare; the file follows the schema's key names.
    func testResultsDocumentRoundTrip() throws {
        let writer = ResultsWriter()
        let document = writer.document(records: [try sampleRecord()], created: Date(timeIntervalSince1970: 1_795_000_000))
        XCTAssertEqual(document.producer, "ios_demo 0.1.0 benchmark")
        let folder = try RepoFiles.temporaryFolder(self)
        let url = folder.appendingPathComponent("results.json")
        try writer.write(document, to: url)
        let data = try Data(contentsOf: url)
        XCTAssertEqual(try ResultsWriter.decode(data), document)

        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        XCTAssertEqual(object["format"] as? String, "zoo-results")
        XCTAssertEqual(object["format_version"] as? Int, 1)
        let record = (object["records"] as! [[String: Any]])[0]
        XCTAssertEqual(record["kind"] as? String, "device")
        XCTAssertEqual((record["host"] as! [String: Any])["kind"] as? String, "phone")
        XCTAssertEqual((record["host"] as! [String: Any])["os"] as? String, "iOS")
        XCTAssertEqual((record["runtime"] as! [String: Any])["name"] as? String, "coreml")
        XCTAssertNotNil(record["latency_ms"] as? [String: Any])
        XCTAssertNotNil(((record["images"] as! [[String: Any]])[0])["output_sha256"] as? String)
        XCTAssertNil(record["accuracy"], "the app measures no accuracy")
    }

    /// The golden iOS results file of tests/data/results decodes, and encodes back to the same
    /// JSON (apart from null members, which the app leaves out).
    func testGoldenIOSResultsRoundTrip() throws {
        let data = try RepoFiles.data("tests/data/results/ios-coreml-fp16.json")
        let document = try ResultsWriter.decode(data, source: "ios-coreml-fp16.json")
        XCTAssertEqual(document.records[0].host.kind, .phone)
        XCTAssertEqual(document.records[0].runtime.name, "coreml")
        let encoded = try ResultsWriter(producer: document.producer ?? "x").encode(document)
        let original = withoutNulls(try JSONSerialization.jsonObject(with: data)) as! NSDictionary
        let again = withoutNulls(try JSONSerialization.jsonObject(with: encoded)) as! NSDictionary
        XCTAssertEqual(original, again)
    }

    /// Every record of the other golden results files decodes (fields the app does not model,
    /// such as accuracy, are skipped).
    func testOtherGoldenResultsDecode() throws {
        for file in try RepoFiles.jsonFiles(in: "tests/data/results") {
            let document = try ResultsWriter.decode(Data(contentsOf: file), source: file.lastPathComponent)
            XCTAssertFalse(document.records.isEmpty, file.lastPathComponent)
        }
    }

    func testInvalidDocumentsAreRefusedNamingTheField() throws {
        var record = try sampleRecord()
        record.latencyMs?.median = -1
        XCTAssertThrowsError(try ResultsWriter().encode(ResultsWriter().document(records: [record]))) { error in
            XCTAssertEqual("\(error)".components(separatedBy: ";").first,
                           "results.json is invalid: field records[0].latency_ms.median: -1.0 is less than the minimum of 0.0")
        }
        record = try sampleRecord()
        record.latencyMs?.p90 = .nan
        XCTAssertThrowsError(try ResultsWriter().encode(ResultsWriter().document(records: [record]))) { error in
            XCTAssertTrue("\(error)".contains("records[0].latency_ms.p90"), "\(error)")
        }
        record = try sampleRecord(manifest: "executorch-xnnpack-int8.json")
        record.artifact?.quantization?["method"] = .string("gptq")
        XCTAssertThrowsError(try ResultsWriter().encode(ResultsWriter().document(records: [record]))) { error in
            XCTAssertTrue("\(error)".contains("records[0].artifact.quantization.method: 'gptq' is not one of"), "\(error)")
        }
        record = try sampleRecord()
        record.images?[0].outputSha256 = "ABC"
        XCTAssertThrowsError(try ResultsWriter().encode(ResultsWriter().document(records: [record]))) { error in
            XCTAssertTrue("\(error)".contains("records[0].images[0].output_sha256"), "\(error)")
        }
        XCTAssertThrowsError(try ResultsWriter().encode(ResultsWriter().document(records: [])))
    }

    func testTimestampFormat() {
        let text = resultsTimestamp(Date(timeIntervalSince1970: 0.25))
        XCTAssertEqual(text, "1970-01-01T00:00:00.250Z")
        XCTAssertTrue(isResultsTimestamp(text))
        XCTAssertTrue(isResultsTimestamp("2026-11-21T15:02:11Z"))
        XCTAssertFalse(isResultsTimestamp("2026-11-21 15:02:11"))
    }

    /// The invalid results files of tests/data/results/invalid: the ones this model can catch
    /// are refused either when decoding or by the checks before writing.
    func testInvalidGoldenResultsAreCaught() throws {
        let folder = "tests/data/results/invalid"
        guard FileManager.default.fileExists(atPath: RepoFiles.url(folder).path) else {
            throw XCTSkip("\(folder) is not in this checkout")
        }
        for name in ["host-kind-watch.json", "missing-host.json", "negative-median.json", "no-records.json",
                     "bad-output-sha256.json", "unknown-kind.json", "newer-format-version.json",
                     "provenance-method.json"] {
            let file = RepoFiles.url("\(folder)/\(name)")
            guard FileManager.default.fileExists(atPath: file.path) else { continue }
            let data = try Data(contentsOf: file)
            var refused = false
            do {
                let document = try ResultsWriter.decode(data, source: name)
                refused = !document.schemaErrors().isEmpty
            } catch {
                refused = true
            }
            XCTAssertTrue(refused, "\(name) was accepted")
        }
    }
}
