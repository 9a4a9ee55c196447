import Dispatch
import Foundation

// The device benchmark, the same protocol as the Android demo (docs/android.md, "Benchmark
// contract"): a folder with the artifact, its manifest.json and images/*.png; W warm-up and N
// timed forward passes on one tile (the first tile of the first image, read through the padding
// as the tiler reads it; a mid-grey tile without images), then every image restored once with
// tiling (per-image latency including tile extraction and blending, and the sha256 of the 8-bit
// output); the results file (results.json in the folder) is read by `zoo device import`.

// MARK: - Statistics

public struct LatencySummary: Equatable, Sendable {
    public let median: Double
    public let p90: Double
    public let min: Double
    public let mean: Double
    public let runs: Int
}

public enum LatencyStatistics {
    /// numpy.percentile(values, percent, method="linear"), including numpy's two-sided
    /// interpolation (`_lerp`: a + d * t below t = 0.5, b - d * (1 - t) from 0.5 up), so the
    /// value is bit-for-bit numpy's.
    public static func percentile(_ values: [Double], _ percent: Double) -> Double {
        precondition(!values.isEmpty, "percentile of no values")
        let sorted = values.sorted()
        let position = Double(sorted.count - 1) * (percent / 100.0)
        let lowIndex = Int(position.rounded(.down))
        let highIndex = Swift.min(lowIndex + 1, sorted.count - 1)
        let gamma = position - Double(lowIndex)
        let low = sorted[lowIndex]
        let high = sorted[highIndex]
        let difference = high - low
        return gamma >= 0.5 ? high - difference * (1.0 - gamma) : low + difference * gamma
    }

    /// median (50th percentile), p90, min and mean (sum of the sorted values / count, as
    /// measure.results.latency_summary) of the timed runs in milliseconds.
    public static func summarize(_ timesMs: [Double]) throws -> LatencySummary {
        guard !timesMs.isEmpty else {
            throw ZooError("no timed runs to summarise", fix: "run the benchmark with at least 1 timed run")
        }
        guard timesMs.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw ZooError("a timed run is negative or not finite", fix: "this is a bug in the timer; report it")
        }
        let sorted = timesMs.sorted()
        return LatencySummary(
            median: percentile(sorted, 50), p90: percentile(sorted, 90), min: sorted[0],
            mean: sorted.reduce(0, +) / Double(sorted.count), runs: sorted.count)
    }
}

/// The benchmark's clock: `DispatchTime.now().uptimeNanoseconds`, i.e. mach_absolute_time
/// (monotonic, does not advance while the device sleeps).
public enum BenchmarkClock {
    public static let timerName = "ios_mach_absolute_time"

    public static func nowNanoseconds() -> UInt64 {
        DispatchTime.now().uptimeNanoseconds
    }
}

/// Runs `body` `warmup` times untimed, then `runs` times timed; returns the timed runs in
/// milliseconds. `clock` returns nanoseconds (injectable for tests).
public func measureRuns(
    warmup: Int, runs: Int, clock: () -> UInt64 = BenchmarkClock.nowNanoseconds,
    afterEach: (() -> Void)? = nil, _ body: () throws -> Void
) throws -> [Double] {
    guard runs >= 1, warmup >= 0 else {
        throw ZooError("runs \(runs) / warm-up \(warmup) are out of range", fix: "use runs >= 1 and warm-up >= 0")
    }
    for _ in 0..<warmup {
        try Task.checkCancellation()
        try body()
    }
    var times: [Double] = []
    times.reserveCapacity(runs)
    for _ in 0..<runs {
        try Task.checkCancellation()
        let start = clock()
        try body()
        let end = clock()
        times.append(Double(end &- start) / 1_000_000.0)
        afterEach?()
    }
    return times
}

/// sha256 of an output image as the zoo hashes it (measure.results.output_sha256):
/// 8-bit RGB bytes, row-major HWC, quantized like a saved 8-bit PNG.
public func outputSHA256(_ image: PlanarImage) -> String {
    ArtifactHasher.sha256(of: Data(image.rgb8Bytes()))
}

// MARK: - The benchmark

public struct BenchmarkConfiguration: Equatable, Sendable {
    public var runs: Int
    public var warmup: Int

    /// The Android app's defaults (docs/android.md), so both phones run the same protocol.
    public static let defaultRuns = 20
    public static let defaultWarmup = 3

    public init(runs: Int = BenchmarkConfiguration.defaultRuns, warmup: Int = BenchmarkConfiguration.defaultWarmup) {
        self.runs = runs
        self.warmup = warmup
    }
}

/// One benchmark photo: its name (file stem, e.g. "astronaut") and pixels.
public struct BenchmarkImage: Sendable {
    public let name: String
    public let image: PlanarImage

    public init(name: String, image: PlanarImage) {
        self.name = name
        self.image = image
    }
}

public struct ImageMeasurement: Equatable, Sendable {
    public let name: String
    public let height: Int
    public let width: Int
    public let tiles: Int
    public let latencyMs: Double
    public let outputSHA256: String
}

public struct BenchmarkMeasurement: Equatable, Sendable {
    public let tile: Int
    public let overlap: Int
    public let scale: Int
    public let configuration: BenchmarkConfiguration
    /// The timed forward passes on one tile, milliseconds, in run order.
    public let tileTimesMs: [Double]
    public let latency: LatencySummary
    public let images: [ImageMeasurement]
    /// The largest memory sample taken after each timed run (MiB), when a sampler was given.
    public let peakMemoryMB: Double?
}

public enum BenchmarkPhase: Equatable, Sendable {
    case warmup(total: Int)
    case timing(done: Int, total: Int)
    case image(name: String, index: Int, total: Int)
}

public struct DeviceBenchmark: Sendable {
    public let manifest: Manifest
    public let configuration: BenchmarkConfiguration
    public let tiler: Tiler

    public init(manifest: Manifest, configuration: BenchmarkConfiguration = BenchmarkConfiguration()) throws {
        guard configuration.runs >= 1 else {
            throw ZooError("runs \(configuration.runs) is less than 1", fix: "use -runs 1 or more")
        }
        guard configuration.warmup >= 0 else {
            throw ZooError("warm-up \(configuration.warmup) is negative", fix: "use -warmup 0 or more")
        }
        self.manifest = manifest
        self.configuration = configuration
        self.tiler = try Tiler(manifest: manifest)
    }

    /// The timed tile: the first tile of the first image, or mid-grey without images.
    public func benchmarkTile(images: [BenchmarkImage]) throws -> [Float] {
        let side = tiler.settings.tile
        guard let first = images.first else {
            return [Float](repeating: 0.5, count: 3 * side * side)
        }
        let plan = try tiler.plan(height: first.image.height, width: first.image.width)
        return tiler.extractTile(from: first.image, plan: plan, top: 0, left: 0)
    }

    /// Warm-up and timed runs on one tile, then each image restored once. `memorySample`
    /// (MiB) is called after every timed run; `progress` reports the phase.
    public func run(
        model: TileModel, images: [BenchmarkImage],
        clock: () -> UInt64 = BenchmarkClock.nowNanoseconds,
        memorySample: (() -> Double?)? = nil,
        progress: ((BenchmarkPhase) -> Void)? = nil
    ) throws -> BenchmarkMeasurement {
        let tileInput = try benchmarkTile(images: images)
        let expected = 3 * tiler.tileOutputSide * tiler.tileOutputSide
        var peak: Double?
        progress?(.warmup(total: configuration.warmup))
        var done = 0
        let times = try measureRuns(
            warmup: configuration.warmup, runs: configuration.runs, clock: clock,
            afterEach: {
                done += 1
                if let sample = memorySample?() { peak = Swift.max(peak ?? sample, sample) }
                progress?(.timing(done: done, total: configuration.runs))
            }
        ) {
            let output = try model.run(tileInput)
            guard output.count == expected else {
                throw ZooError("the model returned \(output.count) values for a tile, expected \(expected)",
                               fix: "check the manifest's output shape against the artifact")
            }
        }
        let summary = try LatencyStatistics.summarize(times)

        var measured: [ImageMeasurement] = []
        for (index, item) in images.enumerated() {
            try Task.checkCancellation()
            progress?(.image(name: item.name, index: index, total: images.count))
            let plan = try tiler.plan(height: item.image.height, width: item.image.width)
            let start = clock()
            let restored = try tiler.restore(item.image, with: model)
            let end = clock()
            measured.append(ImageMeasurement(
                name: item.name, height: item.image.height, width: item.image.width, tiles: plan.numTiles,
                latencyMs: Double(end &- start) / 1_000_000.0, outputSHA256: outputSHA256(restored)))
        }
        return BenchmarkMeasurement(
            tile: tiler.settings.tile, overlap: manifest.tiling.overlap, scale: tiler.settings.scale,
            configuration: configuration, tileTimesMs: times, latency: summary, images: measured,
            peakMemoryMB: peak)
    }
}

// MARK: - Writing the results file

/// Builds, checks and writes the results document (format "zoo-results", format_version 1) that
/// `zoo device import results.json` reads.
public struct ResultsWriter: Sendable {
    public static let format = "zoo-results"
    public static let formatVersion = 1

    public var producer: String

    public init(producer: String = "ios_demo \(ZooCoreInfo.version) benchmark") {
        self.producer = producer
    }

    public func document(records: [ResultRecord], created: Date = Date()) -> ResultsDocument {
        ResultsDocument(producer: producer, created: resultsTimestamp(created), records: records)
    }

    /// The record of one benchmark: kind "device", what ran (model, artifact sha256 and, when the
    /// manifest records it, how the int8 model was made; runtime), where (host), on what (one tile
    /// per forward pass) and what was measured.
    public static func deviceRecord(
        manifest: Manifest, measurement: BenchmarkMeasurement, runtime: ResultRuntime, host: ResultHost,
        notes: [String] = [], created: Date = Date()
    ) -> ResultRecord {
        let latency = measurement.latency
        let tilePixels = Double(measurement.tile * measurement.tile)
        let megapixelsPerSecond = latency.median > 0 ? tilePixels / 1e6 / (latency.median / 1000.0) : nil
        return ResultRecord(
            kind: .device,
            model: manifest.model.name,
            task: manifest.model.task,
            scale: manifest.model.scale,
            artifact: ResultArtifact(
                file: manifest.artifact.file, sha256: manifest.artifact.sha256, target: manifest.target,
                precision: ArtifactPrecision(manifest.precision), bytes: manifest.artifact.bytes,
                quantization: manifest.quantization?.provenance),
            runtime: runtime,
            host: host,
            input: ResultInput(height: measurement.tile, width: measurement.tile, batch: 1,
                               tile: measurement.tile, overlap: measurement.overlap),
            latencyMs: ResultLatency(
                per: .tile, median: latency.median, p90: latency.p90, min: latency.min, mean: latency.mean,
                runs: latency.runs, warmup: measurement.configuration.warmup, timer: BenchmarkClock.timerName),
            throughput: ResultThroughput(megapixelsPerS: megapixelsPerSecond.flatMap(finiteOrNil)),
            peakMemoryMb: measurement.peakMemoryMB.flatMap(finiteOrNil),
            images: measurement.images.map {
                ResultImage(name: $0.name, height: $0.height, width: $0.width, tiles: $0.tiles,
                            latencyMs: $0.latencyMs, outputSha256: $0.outputSHA256)
            },
            created: resultsTimestamp(created),
            complete: true,
            notes: notes)
    }

    /// The document as JSON (pretty, sorted keys); refused with the first bad field when it
    /// breaks the schema ("results.json is invalid: field records[0].latency_ms.median: ...").
    public func encode(_ document: ResultsDocument, source: String = "results.json") throws -> Data {
        let errors = document.schemaErrors()
        if let first = errors.first {
            throw ZooError("\(source) is invalid: field \(first)", fix: "this is a bug in the app's benchmark; report it")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(document)
        data.append(0x0A)  // final newline, like write_results
        return data
    }

    /// Checks and writes the document atomically (a reader never sees a partial file).
    public func write(_ document: ResultsDocument, to url: URL) throws {
        let data = try encode(document, source: url.lastPathComponent)
        try data.write(to: url, options: .atomic)
    }

    /// Reads a results file (format and version checked, then the fields this model knows).
    public static func decode(_ data: Data, source: String = "results.json") throws -> ResultsDocument {
        let document: ResultsDocument
        do {
            document = try JSONDecoder().decode(ResultsDocument.self, from: data)
        } catch {
            throw ZooError("\(source) is invalid: \(describeDecodingError(error))",
                           fix: "write it with the app's benchmark or measure.results.write_results")
        }
        if document.formatVersion > formatVersion {
            throw ZooError("\(source) has format_version \(document.formatVersion), newer than this app understands (\(formatVersion))",
                           fix: "update the app")
        }
        return document
    }
}

/// value when finite, else nil (JSON has no inf/NaN).
public func finiteOrNil(_ value: Double) -> Double? {
    value.isFinite ? value : nil
}
