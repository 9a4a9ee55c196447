import Foundation

// The results file (export_mobile/schemas/results.schema.json, format "zoo-results",
// format_version 1) that the benchmark writes and `zoo device import` reads. Only the fields the
// app writes are modelled (accuracy, operators and reference are left out); absent optional
// fields are left out of the JSON, which the schema allows ("absent means unknown", as
// measure.results.new_record does). The conventions of Manifest.swift apply here too
// (`// json-schema-write:` = the app writes it: every field the schema requires is a
// non-Optional property).

public enum ZooCoreInfo {
    /// The demo app's version, written into `producer` ("ios_demo 0.1.0 benchmark").
    public static let version = "0.1.0"
}

// json-schema-write: results.schema.json#
public struct ResultsDocument: Codable, Equatable, Sendable {
    public var format: String
    public var formatVersion: Int
    public var producer: String?
    public var created: String?
    public var records: [ResultRecord]

    public init(format: String = ResultsWriter.format, formatVersion: Int = ResultsWriter.formatVersion,
                producer: String?, created: String?, records: [ResultRecord]) {
        self.format = format
        self.formatVersion = formatVersion
        self.producer = producer
        self.created = created
        self.records = records
    }

    enum CodingKeys: String, CodingKey {
        case format = "format"
        case formatVersion = "format_version"
        case producer = "producer"
        case created = "created"
        case records = "records"
    }
}

// json-schema-write: results.schema.json#/$defs/record
public struct ResultRecord: Codable, Equatable, Sendable {
    public var kind: RecordKind
    public var model: String
    public var task: ResultTask?
    public var scale: Int?
    public var artifact: ResultArtifact?
    public var runtime: ResultRuntime
    public var host: ResultHost
    public var input: ResultInput?
    public var latencyMs: ResultLatency?
    public var throughput: ResultThroughput?
    public var peakMemoryMb: Double?
    public var images: [ResultImage]?
    public var created: String?
    public var complete: Bool?
    public var notes: [String]?

    public init(kind: RecordKind, model: String, task: ResultTask? = nil, scale: Int? = nil,
                artifact: ResultArtifact? = nil, runtime: ResultRuntime, host: ResultHost,
                input: ResultInput? = nil, latencyMs: ResultLatency? = nil, throughput: ResultThroughput? = nil,
                peakMemoryMb: Double? = nil, images: [ResultImage]? = nil, created: String? = nil,
                complete: Bool? = nil, notes: [String]? = nil) {
        self.kind = kind
        self.model = model
        self.task = task
        self.scale = scale
        self.artifact = artifact
        self.runtime = runtime
        self.host = host
        self.input = input
        self.latencyMs = latencyMs
        self.throughput = throughput
        self.peakMemoryMb = peakMemoryMb
        self.images = images
        self.created = created
        self.complete = complete
        self.notes = notes
    }

    enum CodingKeys: String, CodingKey {
        case kind = "kind"
        case model = "model"
        case task = "task"
        case scale = "scale"
        case artifact = "artifact"
        case runtime = "runtime"
        case host = "host"
        case input = "input"
        case latencyMs = "latency_ms"
        case throughput = "throughput"
        case peakMemoryMb = "peak_memory_mb"
        case images = "images"
        case created = "created"
        case complete = "complete"
        case notes = "notes"
    }
}

// json-schema-write: results.schema.json#/$defs/artifact
public struct ResultArtifact: Codable, Equatable, Sendable {
    public var file: String?
    public var sha256: String
    public var target: String?
    public var precision: ArtifactPrecision?
    public var bytes: Int?
    /// How the int8 model was made: the manifest's `quantization.provenance`, copied whole
    /// (QuantizationProvenance); nil (left out of the file) when the manifest does not say.
    public var quantization: [String: JSONValue]?

    public init(file: String?, sha256: String, target: String?, precision: ArtifactPrecision?, bytes: Int?,
                quantization: [String: JSONValue]? = nil) {
        self.file = file
        self.sha256 = sha256
        self.target = target
        self.precision = precision
        self.bytes = bytes
        self.quantization = quantization
    }

    enum CodingKeys: String, CodingKey {
        case file = "file"
        case sha256 = "sha256"
        case target = "target"
        case precision = "precision"
        case bytes = "bytes"
        case quantization = "quantization"
    }
}

// json-schema-write: results.schema.json#/$defs/runtime
public struct ResultRuntime: Codable, Equatable, Sendable {
    /// "coreml" or "executorch" for this app.
    public var name: String
    public var version: String?
    public var delegate: String?
    /// cpu, gpu, ane, ...
    public var device: String?
    public var precision: String?
    public var threads: Int?
    public var options: [String: JSONValue]?

    public init(name: String, version: String? = nil, delegate: String? = nil, device: String? = nil,
                precision: String? = nil, threads: Int? = nil, options: [String: JSONValue]? = nil) {
        self.name = name
        self.version = version
        self.delegate = delegate
        self.device = device
        self.precision = precision
        self.threads = threads
        self.options = options
    }

    enum CodingKeys: String, CodingKey {
        case name = "name"
        case version = "version"
        case delegate = "delegate"
        case device = "device"
        case precision = "precision"
        case threads = "threads"
        case options = "options"
    }
}

// json-schema-write: results.schema.json#/$defs/host
public struct ResultHost: Codable, Equatable, Sendable {
    /// e.g. "iPhone15,2".
    public var name: String
    public var kind: HostKind
    public var os: String?
    public var osVersion: String?
    public var cpu: String?
    public var cores: Int?
    public var gpu: String?
    public var soc: String?

    public init(name: String, kind: HostKind, os: String? = nil, osVersion: String? = nil, cpu: String? = nil,
                cores: Int? = nil, gpu: String? = nil, soc: String? = nil) {
        self.name = name
        self.kind = kind
        self.os = os
        self.osVersion = osVersion
        self.cpu = cpu
        self.cores = cores
        self.gpu = gpu
        self.soc = soc
    }

    enum CodingKeys: String, CodingKey {
        case name = "name"
        case kind = "kind"
        case os = "os"
        case osVersion = "os_version"
        case cpu = "cpu"
        case cores = "cores"
        case gpu = "gpu"
        case soc = "soc"
    }
}

// json-schema-write: results.schema.json#/$defs/record/properties/input
public struct ResultInput: Codable, Equatable, Sendable {
    public var height: Int
    public var width: Int
    public var batch: Int?
    public var tile: Int?
    public var overlap: Int?

    public init(height: Int, width: Int, batch: Int? = nil, tile: Int? = nil, overlap: Int? = nil) {
        self.height = height
        self.width = width
        self.batch = batch
        self.tile = tile
        self.overlap = overlap
    }

    enum CodingKeys: String, CodingKey {
        case height = "height"
        case width = "width"
        case batch = "batch"
        case tile = "tile"
        case overlap = "overlap"
    }
}

// json-schema-write: results.schema.json#/$defs/latency
public struct ResultLatency: Codable, Equatable, Sendable {
    public var per: LatencyPer?
    public var median: Double
    public var p90: Double?
    public var min: Double?
    public var mean: Double?
    public var runs: Int
    public var warmup: Int?
    public var timer: String?

    public init(per: LatencyPer?, median: Double, p90: Double?, min: Double?, mean: Double?, runs: Int,
                warmup: Int?, timer: String?) {
        self.per = per
        self.median = median
        self.p90 = p90
        self.min = min
        self.mean = mean
        self.runs = runs
        self.warmup = warmup
        self.timer = timer
    }

    enum CodingKeys: String, CodingKey {
        case per = "per"
        case median = "median"
        case p90 = "p90"
        case min = "min"
        case mean = "mean"
        case runs = "runs"
        case warmup = "warmup"
        case timer = "timer"
    }
}

// json-schema-write: results.schema.json#/$defs/record/properties/throughput
public struct ResultThroughput: Codable, Equatable, Sendable {
    public var megapixelsPerS: Double?
    public var gmacsPerS: Double?
    public var peakFraction: Double?

    public init(megapixelsPerS: Double?, gmacsPerS: Double? = nil, peakFraction: Double? = nil) {
        self.megapixelsPerS = megapixelsPerS
        self.gmacsPerS = gmacsPerS
        self.peakFraction = peakFraction
    }

    enum CodingKeys: String, CodingKey {
        case megapixelsPerS = "megapixels_per_s"
        case gmacsPerS = "gmacs_per_s"
        case peakFraction = "peak_fraction"
    }
}

// json-schema-write: results.schema.json#/$defs/image
public struct ResultImage: Codable, Equatable, Sendable {
    public var name: String
    public var height: Int?
    public var width: Int?
    public var tiles: Int?
    public var latencyMs: Double?
    /// sha256 of the output as 8-bit RGB bytes, row-major HWC.
    public var outputSha256: String?

    public init(name: String, height: Int?, width: Int?, tiles: Int?, latencyMs: Double?, outputSha256: String?) {
        self.name = name
        self.height = height
        self.width = width
        self.tiles = tiles
        self.latencyMs = latencyMs
        self.outputSha256 = outputSha256
    }

    enum CodingKeys: String, CodingKey {
        case name = "name"
        case height = "height"
        case width = "width"
        case tiles = "tiles"
        case latencyMs = "latency_ms"
        case outputSha256 = "output_sha256"
    }
}

// json-schema-enum: results.schema.json#/$defs/record/properties/kind
public enum RecordKind: String, CaseIterable, Codable, Sendable {
    case baseline = "baseline"
    case check = "check"
    case bench = "bench"
    case device = "device"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

/// Results files name tasks exactly as manifests do (zoo/tasks.py): one enum for both.
public typealias ResultTask = ModelTask

// json-schema-enum: results.schema.json#/$defs/artifact/properties/precision
public enum ArtifactPrecision: String, CaseIterable, Codable, Sendable {
    case fp32 = "fp32"
    case fp16 = "fp16"
    case int8 = "int8"
    case w8a16 = "w8a16"
    case w8 = "w8"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }

    public init(_ precision: ManifestPrecision) {
        switch precision {
        case .fp32: self = .fp32
        case .fp16: self = .fp16
        case .int8: self = .int8
        }
    }
}

// json-schema-enum: results.schema.json#/$defs/host/properties/kind
public enum HostKind: String, CaseIterable, Codable, Sendable {
    case desktop = "desktop"
    case phone = "phone"
    case tablet = "tablet"
    case other = "other"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

// json-schema-enum: results.schema.json#/$defs/latency/properties/per
public enum LatencyPer: String, CaseIterable, Codable, Sendable {
    case forward = "forward"
    case tile = "tile"
    case image = "image"

    public init(from decoder: Decoder) throws { self = try decodeSchemaEnum(decoder) }
}

// MARK: - Checks before writing (the schema's constraints the app could break)

/// UTC ISO 8601 with milliseconds, e.g. 2026-11-21T15:40:03.512Z (the schema's timestamp).
public func resultsTimestamp(_ date: Date = Date()) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.timeZone = TimeZone(secondsFromGMT: 0)
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: date)
}

private let timestampPattern = try! NSRegularExpression(
    pattern: "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z$")

func isResultsTimestamp(_ text: String) -> Bool {
    let range = NSRange(text.startIndex..<text.endIndex, in: text)
    return timestampPattern.firstMatch(in: text, options: [], range: range) != nil
}

extension ResultsDocument {
    /// Every violation of the schema's constraints this model can express, as
    /// `"field.path: message"` (empty when valid), in the Python side's wording.
    public func schemaErrors() -> [String] {
        var errors: [String] = []
        func check(_ ok: Bool, _ path: String, _ message: @autoclosure () -> String) {
            if !ok { errors.append("\(path): \(message())") }
        }
        func finite(_ value: Double?, _ path: String, minimum: Double? = nil, maximum: Double? = nil) {
            guard let value else { return }
            check(value.isFinite, path, "\(value) is not a finite number (write null instead)")
            if let minimum, value.isFinite { check(value >= minimum, path, "\(value) is less than the minimum of \(minimum)") }
            if let maximum, value.isFinite { check(value <= maximum, path, "\(value) is greater than the maximum of \(maximum)") }
        }
        func atLeast(_ value: Int?, _ minimum: Int, _ path: String) {
            guard let value else { return }
            check(value >= minimum, path, "\(value) is less than the minimum of \(minimum)")
        }
        func nonEmpty(_ value: String?, _ path: String) {
            guard let value else { return }
            check(!value.isEmpty, path, "'' is too short")
        }
        check(format == ResultsWriter.format, "format", "'\(format)' was expected to be '\(ResultsWriter.format)'")
        check(formatVersion == ResultsWriter.formatVersion, "format_version",
              "\(formatVersion) was expected to be \(ResultsWriter.formatVersion)")
        nonEmpty(producer, "producer")
        if let created { check(isResultsTimestamp(created), "created", "'\(created)' is not a UTC ISO 8601 timestamp") }
        check(!records.isEmpty, "records", "[] should be non-empty")
        for (index, record) in records.enumerated() {
            let at = "records[\(index)]"
            check(!record.model.isEmpty, "\(at).model", "'' is too short")
            atLeast(record.scale, 1, "\(at).scale")
            if let artifact = record.artifact {
                nonEmpty(artifact.file, "\(at).artifact.file")
                check(isLowercaseHex64(artifact.sha256), "\(at).artifact.sha256", "'\(artifact.sha256)' is not a sha256")
                nonEmpty(artifact.target, "\(at).artifact.target")
                atLeast(artifact.bytes, 0, "\(at).artifact.bytes")
                if let provenance = artifact.quantization {
                    errors += QuantizationProvenance.problems(provenance, at: "\(at).artifact.quantization")
                }
            }
            check(!record.runtime.name.isEmpty, "\(at).runtime.name", "'' is too short")
            atLeast(record.runtime.threads, 1, "\(at).runtime.threads")
            check(!record.host.name.isEmpty, "\(at).host.name", "'' is too short")
            atLeast(record.host.cores, 1, "\(at).host.cores")
            if let input = record.input {
                atLeast(input.height, 1, "\(at).input.height")
                atLeast(input.width, 1, "\(at).input.width")
                atLeast(input.batch, 1, "\(at).input.batch")
                atLeast(input.tile, 1, "\(at).input.tile")
                atLeast(input.overlap, 0, "\(at).input.overlap")
            }
            if let latency = record.latencyMs {
                finite(latency.median, "\(at).latency_ms.median", minimum: 0)
                finite(latency.p90, "\(at).latency_ms.p90")
                finite(latency.min, "\(at).latency_ms.min")
                finite(latency.mean, "\(at).latency_ms.mean")
                atLeast(latency.runs, 1, "\(at).latency_ms.runs")
                atLeast(latency.warmup, 0, "\(at).latency_ms.warmup")
            }
            if let throughput = record.throughput {
                finite(throughput.megapixelsPerS, "\(at).throughput.megapixels_per_s")
                finite(throughput.gmacsPerS, "\(at).throughput.gmacs_per_s")
                finite(throughput.peakFraction, "\(at).throughput.peak_fraction")
            }
            finite(record.peakMemoryMb, "\(at).peak_memory_mb")
            for (imageIndex, image) in (record.images ?? []).enumerated() {
                let imageAt = "\(at).images[\(imageIndex)]"
                check(!image.name.isEmpty, "\(imageAt).name", "'' is too short")
                atLeast(image.height, 1, "\(imageAt).height")
                atLeast(image.width, 1, "\(imageAt).width")
                atLeast(image.tiles, 1, "\(imageAt).tiles")
                finite(image.latencyMs, "\(imageAt).latency_ms", minimum: 0)
                if let sha = image.outputSha256 {
                    check(isLowercaseHex64(sha), "\(imageAt).output_sha256", "'\(sha)' is not a sha256")
                }
            }
            if let created = record.created {
                check(isResultsTimestamp(created), "\(at).created", "'\(created)' is not a UTC ISO 8601 timestamp")
            }
        }
        return errors
    }
}
