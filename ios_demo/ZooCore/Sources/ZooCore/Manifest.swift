import CryptoKit
import Foundation

// The manifest.json written beside every artifact by `zoo export`
// (export_mobile/schemas/manifest.schema.json, format_version 1), as far as the app needs it.
//
// Conventions that tests/test_ios_core.py checks from Linux (keep them when editing):
// * every Codable struct carries a `// json-schema-read:` (or `-write:`) line naming the schema
//   object it models, and a `CodingKeys` enum with one `case swiftName = "json_key"` per line;
// * a property that is not Optional is a field the schema requires, and a field the schema
//   allows to be null is Optional;
// * every String enum of schema values carries a `// json-schema-enum:` line; the manifest's
//   enums list every value the schema allows, so any valid manifest decodes.
// Fields the app does not use (tools, fp16_range, rewrites, ...) are not decoded.

// json-schema-read: manifest.schema.json#
public struct Manifest: Codable, Equatable, Sendable {
    public var format: String
    public var formatVersion: Int
    public var model: ManifestModel
    public var artifact: ManifestArtifact
    public var target: String
    public var backend: ManifestBackend
    public var precision: ManifestPrecision
    public var quantization: ManifestQuantization?
    public var inputs: [TensorSpec]
    public var outputs: [TensorSpec]
    public var tiling: TilingSpec
    public var dynamicShapes: Bool
    public var created: String
    public var verification: ManifestVerification?
    public var notes: [String]

    enum CodingKeys: String, CodingKey {
        case format = "format"
        case formatVersion = "format_version"
        case model = "model"
        case artifact = "artifact"
        case target = "target"
        case backend = "backend"
        case precision = "precision"
        case quantization = "quantization"
        case inputs = "inputs"
        case outputs = "outputs"
        case tiling = "tiling"
        case dynamicShapes = "dynamic_shapes"
        case created = "created"
        case verification = "verification"
        case notes = "notes"
    }
}

// json-schema-read: manifest.schema.json#/properties/model
public struct ManifestModel: Codable, Equatable, Sendable {
    public var name: String
    public var family: String
    public var variant: String
    public var task: ModelTask
    public var scale: Int
    public var summary: String
    public var paper: String?
    public var notes: [String]
    public var weights: ManifestWeights

    enum CodingKeys: String, CodingKey {
        case name = "name"
        case family = "family"
        case variant = "variant"
        case task = "task"
        case scale = "scale"
        case summary = "summary"
        case paper = "paper"
        case notes = "notes"
        case weights = "weights"
    }
}

// json-schema-read: manifest.schema.json#/properties/model/properties/weights
public struct ManifestWeights: Codable, Equatable, Sendable {
    public var source: WeightsSource
    public var file: String?
    public var sha256: String?

    enum CodingKeys: String, CodingKey {
        case source = "source"
        case file = "file"
        case sha256 = "sha256"
    }
}

// json-schema-read: manifest.schema.json#/properties/artifact
public struct ManifestArtifact: Codable, Equatable, Sendable {
    /// File or folder name, beside manifest.json.
    public var file: String
    public var format: ArtifactFormat
    /// Size in bytes (sum of all files for a folder).
    public var bytes: Int
    public var sha256: String
    public var sha256Method: HashMethod

    enum CodingKeys: String, CodingKey {
        case file = "file"
        case format = "format"
        case bytes = "bytes"
        case sha256 = "sha256"
        case sha256Method = "sha256_method"
    }
}

// json-schema-read: manifest.schema.json#/properties/backend
public struct ManifestBackend: Codable, Equatable, Sendable {
    public var runtime: BackendRuntime
    /// e.g. XnnpackBackend, CoreMLBackend; nil when the runtime has no delegate concept.
    public var delegate: String?
    public var partitions: Int?
    public var opsOutsideDelegate: [String]
    /// Target settings: `compute_units` (Core ML), deployment target, ...
    public var options: [String: JSONValue]

    enum CodingKeys: String, CodingKey {
        case runtime = "runtime"
        case delegate = "delegate"
        case partitions = "partitions"
        case opsOutsideDelegate = "ops_outside_delegate"
        case options = "options"
    }
}

// json-schema-read: manifest.schema.json#/properties/quantization
public struct ManifestQuantization: Codable, Equatable, Sendable {
    public var method: QuantizationMethod
    public var recipe: String?
    /// How the int8 model was made (`$defs/provenance`), kept whole: the benchmark copies it into
    /// the results' `artifact.quantization`. nil when not recorded (manifests of an older zoo).
    public var provenance: [String: JSONValue]?

    enum CodingKeys: String, CodingKey {
        case method = "method"
        case recipe = "recipe"
        case provenance = "provenance"
    }
}

// json-schema-read: manifest.schema.json#/$defs/tensor
public struct TensorSpec: Codable, Equatable, Sendable {
    /// Tensor name in the artifact (Core ML feature name; positional runtimes: the index).
    public var name: String
    /// In the order of `layout`; -1 marks a dynamic dimension.
    public var shape: [Int]
    public var dtype: TensorDType
    public var layout: TensorLayout
    public var color: String
    /// Range of the real (dequantized) values: [0, 1] for images.
    public var valueRange: [Double]
    /// int8/uint8 tensors: real = scale * (stored - zero_point).
    public var quantization: TensorQuantization?

    enum CodingKeys: String, CodingKey {
        case name = "name"
        case shape = "shape"
        case dtype = "dtype"
        case layout = "layout"
        case color = "color"
        case valueRange = "value_range"
        case quantization = "quantization"
    }
}

// json-schema-read: manifest.schema.json#/$defs/tensor/properties/quantization
public struct TensorQuantization: Codable, Equatable, Sendable {
    public var scale: Double
    public var zeroPoint: Int

    enum CodingKeys: String, CodingKey {
        case scale = "scale"
        case zeroPoint = "zero_point"
    }
}

// json-schema-read: manifest.schema.json#/properties/tiling
public struct TilingSpec: Codable, Equatable, Sendable {
    /// [height, width] of one tile in input pixels (the artifact's input H and W).
    public var tile: [Int]
    public var overlap: Int
    public var margin: Int
    public var sizeMultiple: Int
    public var scale: Int
    public var padMode: PadMode
    public var spec: String

    enum CodingKeys: String, CodingKey {
        case tile = "tile"
        case overlap = "overlap"
        case margin = "margin"
        case sizeMultiple = "size_multiple"
        case scale = "scale"
        case padMode = "pad_mode"
        case spec = "spec"
    }
}

// json-schema-read: manifest.schema.json#/properties/verification
public struct ManifestVerification: Codable, Equatable, Sendable {
    public var ran: Bool
    public var reference: String
    public var input: String
    public var maxAbsError: Double?
    public var psnrDb: Double?
    public var nonfinite: Bool?
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case ran = "ran"
        case reference = "reference"
        case input = "input"
        case maxAbsError = "max_abs_error"
        case psnrDb = "psnr_db"
        case nonfinite = "nonfinite"
        case reason = "reason"
    }
}

/// Read first, before the full decode, so that a newer format_version gets its own message.
// json-schema-read: manifest.schema.json#
struct ManifestHeader: Codable {
    var format: String?
    var formatVersion: Int?

    enum CodingKeys: String, CodingKey {
        case format = "format"
        case formatVersion = "format_version"
    }
}

// MARK: - Enums of schema values

/// The tasks of zoo/tasks.py, spelled as both schemas spell them (manifests and results files);
/// tests/test_tasks.py checks this list against the table.
// json-schema-enum: manifest.schema.json#/properties/model/properties/task
public enum ModelTask: String, CaseIterable, Codable, Sendable {
    case denoise = "denoise"
    case blindDenoise = "blind-denoise"
    case deblur = "deblur"
    case derain = "derain"
    case superResolution = "super-resolution"

    /// Older spellings still read (manifests written before the task table said "sr"), never written:
    /// the schema's x-aliases.
    public static let aliases: [String: ModelTask] = ["sr": .superResolution]

    public init(from decoder: Decoder) throws {
        if let raw = try? decoder.singleValueContainer().decode(String.self), let task = ModelTask.aliases[raw] {
            self = task
            return
        }
        self = try decodeSchemaEnum(decoder)
    }
}

// json-schema-enum: manifest.schema.json#/properties/model/properties/weights/properties/source
public enum WeightsSource: String, CaseIterable, Codable, Sendable {
    case shipped = "shipped"
    case file = "file"
    case untrained = "untrained"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

// json-schema-enum: manifest.schema.json#/properties/artifact/properties/format
public enum ArtifactFormat: String, CaseIterable, Codable, Sendable {
    case pte = "pte"
    case mlpackage = "mlpackage"
    case tflite = "tflite"
    case onnx = "onnx"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

// json-schema-enum: manifest.schema.json#/properties/artifact/properties/sha256_method
public enum HashMethod: String, CaseIterable, Codable, Sendable {
    /// sha256 of the file's bytes.
    case file = "file"
    /// Folders (.mlpackage): sha256 of one line `relative/path<TAB>sha256-of-file\n` per
    /// regular file, sorted by path.
    case tree = "tree"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

// json-schema-enum: manifest.schema.json#/properties/backend/properties/runtime
public enum BackendRuntime: String, CaseIterable, Codable, Sendable {
    case executorch = "executorch"
    case coreml = "coreml"
    case litert = "litert"
    case onnxruntime = "onnxruntime"
    case qnn = "qnn"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

// json-schema-enum: manifest.schema.json#/properties/precision
public enum ManifestPrecision: String, CaseIterable, Codable, Sendable {
    case fp32 = "fp32"
    case fp16 = "fp16"
    case int8 = "int8"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

// json-schema-enum: manifest.schema.json#/properties/quantization/properties/method
public enum QuantizationMethod: String, CaseIterable, Codable, Sendable {
    case ptq = "ptq"
    case qat = "qat"
    case weightsOnly = "weights-only"
    case target = "target"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

// json-schema-enum: manifest.schema.json#/$defs/tensor/properties/dtype
public enum TensorDType: String, CaseIterable, Codable, Sendable {
    case float32 = "float32"
    case float16 = "float16"
    case int8 = "int8"
    case uint8 = "uint8"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }

    public var isQuantized: Bool { self == .int8 || self == .uint8 }
}

// json-schema-enum: manifest.schema.json#/$defs/tensor/properties/layout
public enum TensorLayout: String, CaseIterable, Codable, Sendable {
    case nchw = "NCHW"
    case nhwc = "NHWC"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

/// The runtimes this app has (what `backend.runtime` must be for the app to run an artifact).
public enum AppRuntime: String, CaseIterable, Sendable {
    case coreml = "coreml"
    case executorch = "executorch"
}

/// Core ML compute units as `zoo export --option compute_units=...` writes them
/// (coremltools names, any case: `ALL`, `cpu_and_ne`, ...).
public enum ComputeUnitsOption: String, CaseIterable, Sendable {
    case all = "all"
    case cpuOnly = "cpu_only"
    case cpuAndGPU = "cpu_and_gpu"
    case cpuAndNeuralEngine = "cpu_and_ne"

    public init?(manifestValue: String) {
        self.init(rawValue: manifestValue.lowercased())
    }
}

// MARK: - Loading and checking

extension Manifest {
    public static let formatName = "zoo-mobile-manifest"
    public static let supportedFormatVersion = 1
    static let fix = "export the model again with `zoo export` and copy the whole export folder"

    /// Decode and check a manifest; `source` names the file in error messages.
    public static func decode(_ data: Data, source: String = "manifest.json") throws -> Manifest {
        let decoder = JSONDecoder()
        let header: ManifestHeader
        do {
            header = try decoder.decode(ManifestHeader.self, from: data)
        } catch {
            throw ZooError("\(source) is not a zoo export manifest (\(describeDecodingError(error)))", fix: fix)
        }
        guard header.format == formatName else {
            throw ZooError("\(source) is not a zoo export manifest (format is not '\(formatName)')", fix: fix)
        }
        guard let version = header.formatVersion else {
            throw ZooError("\(source) is invalid: field format_version is missing", fix: fix)
        }
        guard version == supportedFormatVersion else {
            if version > supportedFormatVersion {
                throw ZooError(
                    "\(source) has format_version \(version), newer than this app understands (\(supportedFormatVersion))",
                    fix: "update the app (ios_demo) to the zoo version that exported the model")
            }
            throw ZooError("\(source) has unknown format_version \(version)", fix: fix)
        }
        let manifest: Manifest
        do {
            manifest = try decoder.decode(Manifest.self, from: data)
        } catch {
            throw ZooError("\(source) is invalid: \(describeDecodingError(error))", fix: fix)
        }
        try manifest.validate(source: source)
        return manifest
    }

    /// Read and check `manifest.json` (or the manifest.json inside a folder).
    public static func load(from url: URL) throws -> Manifest {
        var isDirectory: ObjCBool = false
        var file = url
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            file = url.appendingPathComponent("manifest.json")
        }
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw ZooError("\(file.path) does not exist", fix: "copy the export folder (artifact + manifest.json) written by `zoo export`")
        }
        let data = try Data(contentsOf: file)
        return try decode(data, source: file.lastPathComponent)
    }

    /// Checks what the app relies on beyond the schema's types; throws the first problem.
    public func validate(source: String = "manifest.json") throws {
        func fail(_ problem: String, fix: String = Manifest.fix) -> ZooError {
            ZooError("\(source): \(problem)", fix: fix)
        }
        guard format == Manifest.formatName else { throw fail("format is '\(format)', not '\(Manifest.formatName)'") }
        guard formatVersion == Manifest.supportedFormatVersion else {
            throw fail("format_version \(formatVersion) is not \(Manifest.supportedFormatVersion)")
        }
        guard !artifact.file.isEmpty, !artifact.file.contains("/"), !artifact.file.contains("\\") else {
            throw fail("artifact.file '\(artifact.file)' must be a plain name beside manifest.json")
        }
        guard isLowercaseHex64(artifact.sha256) else {
            throw fail("artifact.sha256 '\(artifact.sha256)' is not 64 lowercase hex digits")
        }
        let expectedMethod: HashMethod = artifact.format == .mlpackage ? .tree : .file
        guard artifact.sha256Method == expectedMethod else {
            throw fail("artifact.sha256_method is '\(artifact.sha256Method.rawValue)' for a .\(artifact.format.rawValue), expected '\(expectedMethod.rawValue)'")
        }
        guard model.scale >= 1 else { throw fail("model.scale \(model.scale) is not a positive integer") }
        guard inputs.count == 1, outputs.count == 1 else {
            throw fail("the artifact has \(inputs.count) inputs and \(outputs.count) outputs; the app runs one image in, one image out")
        }
        guard !dynamicShapes else {
            throw fail("dynamic_shapes is true; the app feeds fixed-size tiles", fix: "export with a fixed --tile")
        }
        // Tiling: square tiles, consistent with the tensors and the plan of docs/tiling.md.
        guard tiling.tile.count == 2, tiling.tile[0] >= 1, tiling.tile[0] == tiling.tile[1] else {
            throw fail("tiling.tile \(tiling.tile) is not a square [T, T]", fix: "re-export with a square --tile (the zoo's tiling is square)")
        }
        guard tiling.scale == model.scale else {
            throw fail("tiling.scale \(tiling.scale) differs from model.scale \(model.scale)")
        }
        do {
            _ = try TilePlan.plan(
                height: tiling.tile[0], width: tiling.tile[0], tile: tiling.tile[0], overlap: tiling.overlap,
                sizeMultiple: tiling.sizeMultiple, margin: tiling.margin)
        } catch let error as ZooError {
            throw fail("tiling is invalid: \(error.description)")
        }
        let tile = tiling.tile[0]
        try check(inputs[0], field: "inputs[0]", side: tile, fail: fail)
        try check(outputs[0], field: "outputs[0]", side: tile * tiling.scale, fail: fail)
        // The record goes into the results file unchanged: refuse a broken one before a long run.
        if let provenance = quantization?.provenance,
           let problem = QuantizationProvenance.problems(provenance, at: "quantization.provenance").first {
            throw fail(problem)
        }
    }

    private func check(_ tensor: TensorSpec, field: String, side: Int, fail: (String, String) -> ZooError) throws {
        let expected = tensor.layout == .nchw ? [1, 3, side, side] : [1, side, side, 3]
        guard tensor.shape == expected else {
            throw fail("\(field).shape \(tensor.shape) is not \(expected) (\(tensor.layout.rawValue), tile \(tiling.tile[0]), scale \(tiling.scale))", Manifest.fix)
        }
        guard tensor.color == "RGB" else {
            throw fail("\(field).color '\(tensor.color)' is not RGB", Manifest.fix)
        }
        guard tensor.valueRange.count == 2, tensor.valueRange[0] == 0, tensor.valueRange[1] == 1 else {
            throw fail("\(field).value_range \(tensor.valueRange) is not [0, 1]; the app feeds images in [0, 1]", Manifest.fix)
        }
        if tensor.dtype.isQuantized {
            guard let quantization = tensor.quantization, quantization.scale > 0, quantization.scale.isFinite else {
                throw fail("\(field) is \(tensor.dtype.rawValue) without a positive quantization.scale", Manifest.fix)
            }
        }
    }

    /// The tile side in input pixels (checked square by `validate`).
    public var tileSide: Int { tiling.tile[0] }

    /// The runtime of this app that runs the artifact, or a ZooError naming the target to export.
    public func appRuntime() throws -> AppRuntime {
        switch (backend.runtime, artifact.format) {
        case (.coreml, .mlpackage):
            return .coreml
        case (.executorch, .pte):
            return .executorch
        case (.coreml, _), (.executorch, _):
            throw ZooError(
                "\(artifact.file): runtime \(backend.runtime.rawValue) with a .\(artifact.format.rawValue) artifact is not a combination the app knows",
                fix: "re-export with `zoo export`")
        case (.litert, _), (.onnxruntime, _), (.qnn, _):
            throw ZooError(
                "\(artifact.file) is a \(target) export (runtime \(backend.runtime.rawValue)); the iOS app runs Core ML and ExecuTorch",
                fix: "export for iOS: --target coreml, executorch-xnnpack or executorch-coreml")
        }
    }

    /// `backend.options.compute_units` (Core ML), nil when absent or not a known value.
    public var computeUnits: ComputeUnitsOption? {
        backend.options["compute_units"]?.stringValue.flatMap(ComputeUnitsOption.init(manifestValue:))
    }

    /// Where the artifact is, for a manifest read from `folder`.
    public func artifactURL(in folder: URL) -> URL {
        folder.appendingPathComponent(artifact.file, isDirectory: artifact.sha256Method == .tree)
    }

    /// Checks the artifact beside the manifest against `artifact.sha256` (and its size) before it
    /// is loaded; a mismatch means the file is corrupted or was replaced.
    @discardableResult
    public func verifyArtifact(in folder: URL) throws -> ArtifactDigest {
        let url = artifactURL(in: folder)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw ZooError("artifact \(artifact.file) is missing beside manifest.json in \(folder.lastPathComponent)",
                           fix: "copy the whole export folder (artifact + manifest.json)")
        }
        let isFolder = isDirectory.boolValue
        guard isFolder == (artifact.sha256Method == .tree) else {
            throw ZooError("artifact \(artifact.file) is a \(isFolder ? "folder" : "file"), the manifest expects a \(isFolder ? "file" : "folder")",
                           fix: "copy the export folder again")
        }
        let digest = try ArtifactHasher.digest(of: url)
        guard digest.sha256 == artifact.sha256 else {
            throw ZooError(
                "artifact \(artifact.file) has sha256 \(digest.sha256.prefix(12))..., the manifest says \(artifact.sha256.prefix(12))...: the file is corrupted or was replaced",
                fix: "copy the export folder again (artifact and manifest.json together)")
        }
        guard digest.bytes == artifact.bytes else {
            throw ZooError("artifact \(artifact.file) has \(digest.bytes) bytes, the manifest says \(artifact.bytes)",
                           fix: "copy the export folder again")
        }
        return digest
    }
}

// MARK: - Quantization provenance (manifest quantization.provenance = results artifact.quantization)

/// The provenance record of an int8 model (quantize/provenance.py, docs/quantization.md#provenance;
/// `$defs/provenance`, the same in both schemas): method ptq / qat / target, recipe, mixed,
/// calibration, steps, options, source and an optional note. The app keeps it as the JSON object it
/// read (`[String: JSONValue]`, every key) and only checks the fields the schema defines; keys it
/// does not know are copied as they are (`zoo device import` validates the whole results file).
/// The Android core does the same (QuantizationProvenance in Manifest.kt).
public enum QuantizationProvenance {
    /// `$defs/provenance/properties/method`.
    public static let methods = ["ptq", "qat", "target"]
    /// `$defs/provenance/required`.
    public static let requiredKeys = ["method", "recipe", "mixed", "calibration", "steps", "options", "source"]

    /// Every problem of `record` as `"path.key: message"` (empty when it is fine); `path` names the
    /// record, e.g. `quantization.provenance` or `records[0].artifact.quantization`.
    public static func problems(_ record: [String: JSONValue], at path: String) -> [String] {
        var problems: [String] = []
        for key in requiredKeys where record[key] == nil {
            problems.append("\(path).\(key) is missing")
        }
        if let method = record["method"], !methods.contains(method.stringCase ?? "") {
            problems.append("\(path).method: \(method.messageText) is not one of \(methods.joined(separator: ", "))")
        }
        for key in ["recipe", "mixed", "source"] {
            if let value = record[key], !value.isNull, value.stringCase == nil {
                problems.append("\(path).\(key): \(value.messageText) is not a string or null")
            }
        }
        if let note = record["note"], note.stringCase == nil {
            problems.append("\(path).note: \(note.messageText) is not a string")
        }
        if let options = record["options"], options.objectCase == nil {
            problems.append("\(path).options: \(options.messageText) is not an object")
        }
        if let steps = record["steps"], !steps.isNull, (steps.intCase ?? -1) < 0 {
            problems.append("\(path).steps: \(steps.messageText) is not an integer >= 0 or null")
        }
        if let calibration = record["calibration"], !calibration.isNull {
            if let entries = calibration.objectCase {
                if (entries["data"]?.stringCase ?? "").isEmpty {
                    problems.append("\(path).calibration.data: must be a non-empty string")
                }
                for key in ["images", "batches"] {
                    if let count = entries[key], !count.isNull, (count.intCase ?? 0) < 1 {
                        problems.append("\(path).calibration.\(key): \(count.messageText) is not an integer >= 1 or null")
                    }
                }
                if let degradation = entries["degradation"], !degradation.isNull, degradation.stringCase == nil {
                    problems.append("\(path).calibration.degradation: \(degradation.messageText) is not a string or null")
                }
            } else {
                problems.append("\(path).calibration: \(calibration.messageText) is not an object or null")
            }
        }
        return problems
    }
}

func isLowercaseHex64(_ text: String) -> Bool {
    text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
}

// MARK: - sha256 of artifacts (export_mobile/manifest.py `sha256_of`)

/// sha256, method and size of an artifact, computed exactly like `export_mobile.manifest.sha256_of`.
public struct ArtifactDigest: Equatable, Sendable {
    public let sha256: String
    public let method: HashMethod
    public let bytes: Int
}

public enum ArtifactHasher {
    /// A file: sha256 of its bytes (`file`). A folder: `tree` (see `treeSHA256`).
    public static func digest(of url: URL) throws -> ArtifactDigest {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw ZooError("artifact \(url.lastPathComponent) does not exist", fix: "re-export it with `zoo export`")
        }
        if isDirectory.boolValue {
            let (sha, bytes) = try treeSHA256(of: url)
            return ArtifactDigest(sha256: sha, method: .tree, bytes: bytes)
        }
        let (sha, bytes) = try fileSHA256(of: url)
        return ArtifactDigest(sha256: sha, method: .file, bytes: bytes)
    }

    /// sha256 (lowercase hex) and size of a file, read in 1 MiB chunks.
    public static func fileSHA256(of url: URL) throws -> (sha256: String, bytes: Int) {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        var total = 0
        while true {
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { break }
            hasher.update(data: chunk)
            total += chunk.count
        }
        return (hex(hasher.finalize()), total)
    }

    /// The `tree` digest of a folder such as an .mlpackage: the sha256 of the UTF-8 text made of
    /// one line `relative/posix/path<TAB>sha256-of-file\n` per regular file (symbolic links to
    /// files count as the file, as Python's `is_file()` does), sorted by path in code point order
    /// (Python's `sorted` of str; the same as UTF-8 byte order). Returns the digest and the sum
    /// of the file sizes.
    public static func treeSHA256(of folder: URL) throws -> (sha256: String, bytes: Int) {
        let manager = FileManager.default
        let root = folder.path
        let subpaths = try manager.subpathsOfDirectory(atPath: root)
        var files: [String] = []
        for subpath in subpaths {
            var isDirectory: ObjCBool = false
            let full = (root as NSString).appendingPathComponent(subpath)
            // fileExists follows symbolic links, like pathlib's is_file().
            if manager.fileExists(atPath: full, isDirectory: &isDirectory), !isDirectory.boolValue {
                files.append(subpath)
            }
        }
        files.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        var listing = ""
        var total = 0
        for relative in files {
            let (sha, bytes) = try fileSHA256(of: URL(fileURLWithPath: (root as NSString).appendingPathComponent(relative)))
            listing += "\(relative)\t\(sha)\n"
            total += bytes
        }
        return (hex(SHA256.hash(data: Data(listing.utf8))), total)
    }

    /// sha256 of bytes in memory, lowercase hex.
    public static func sha256(of data: Data) -> String {
        hex(SHA256.hash(data: data))
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        for byte in digest {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
