import Foundation
import Observation
import os
import ZooCore

/// The benchmark mode (the Android app's contract, docs/android.md): a folder in Documents with
/// the artifact, its manifest.json and images/*.png; W warm-up and N timed runs on one tile,
/// every image restored once; the results written atomically to <folder>/results.json for
/// `zoo device import results.json`, or one line to <folder>/error.txt when it fails.
@Observable
@MainActor
final class BenchmarkController {
    var folders: [String] = []
    var folderName: String = ""
    var runs = BenchmarkConfiguration.defaultRuns
    var warmup = BenchmarkConfiguration.defaultWarmup
    /// nil: the manifest's compute units (Core ML only).
    var computeUnits: ComputeUnitsOption?
    var isRunning = false
    var progress: Double = 0
    var log: [String] = []
    var resultsURL: URL?
    var errorMessage: String?

    @ObservationIgnored private var task: Task<Void, Never>?
    @ObservationIgnored private let logger = Logger(subsystem: "org.mobilerestorationzoo.ZooDemo", category: "benchmark")

    static let resultsFileName = "results.json"
    static let errorFileName = "error.txt"

    func reload() {
        folders = ArtifactCatalog.documentFolders()
        if folderName.isEmpty || !folders.contains(folderName) {
            folderName = folders.first ?? ""
        }
    }

    /// From the launch arguments (`-benchmark <folder> [-runs N] [-warmup W]`): runs at once.
    func start(options: LaunchOptions) {
        guard let folder = options.benchmarkFolder else { return }
        folderName = folder
        runs = options.configuration.runs
        warmup = options.configuration.warmup
        run()
    }

    func cancel() {
        task?.cancel()
    }

    func run() {
        guard !isRunning else { return }
        let name = folderName
        let configuration = BenchmarkConfiguration(runs: runs, warmup: warmup)
        let units = computeUnits
        isRunning = true
        progress = 0
        log = []
        resultsURL = nil
        errorMessage = nil
        task = Task {
            defer { isRunning = false }
            let folder = (try? LaunchOptions.checkedFolderName(name)).map {
                DeviceInfo.documents.appendingPathComponent($0, isDirectory: true)
            }
            if let folder {
                // Results of an earlier run must not be mistaken for this one's.
                try? FileManager.default.removeItem(at: folder.appendingPathComponent(Self.resultsFileName))
                try? FileManager.default.removeItem(at: folder.appendingPathComponent(Self.errorFileName))
            }
            do {
                let url = try await benchmark(folderName: name, configuration: configuration, units: units)
                resultsURL = url
                say("Wrote \(url.path)")
                say("Copy it to the Mac (Files app, Finder or AirDrop) and run: zoo device import \(Self.resultsFileName)")
                // A line to look for in the device console when the benchmark was launched remotely.
                print("ZOO_BENCHMARK_DONE \(url.path)")
            } catch is CancellationError {
                say("Cancelled")
            } catch {
                let message = error.localizedDescription
                errorMessage = message
                say("Failed: \(message)")
                print("ZOO_BENCHMARK_FAILED \(message)")
                if let folder, FileManager.default.fileExists(atPath: folder.path) {
                    // One line, like the Android app's error.txt, written atomically.
                    try? Data((message.replacingOccurrences(of: "\n", with: " ") + "\n").utf8)
                        .write(to: folder.appendingPathComponent(Self.errorFileName), options: .atomic)
                }
            }
        }
    }

    private func say(_ line: String) {
        log.append(line)
        logger.info("\(line, privacy: .public)")
    }

    private func benchmark(folderName: String, configuration: BenchmarkConfiguration,
                           units: ComputeUnitsOption?) async throws -> URL {
        let name = try LaunchOptions.checkedFolderName(folderName)
        let documents = DeviceInfo.documents
        let folderURL = documents.appendingPathComponent(name, isDirectory: true)
        guard FileManager.default.fileExists(atPath: folderURL.path) else {
            throw ZooError("Documents/\(name) does not exist",
                           fix: "copy the benchmark folder (artifact, manifest.json, images/*.png) into the app's Documents")
        }
        say("Folder Documents/\(name)")
        let folder = try BenchmarkFolder(url: folderURL)
        let manifest = folder.manifest
        _ = try manifest.appRuntime()
        say("Model \(manifest.model.name), \(manifest.target) \(manifest.precision.rawValue), tile \(manifest.tileSide), overlap \(manifest.tiling.overlap)")
        if manifest.model.weights.source == .untrained {
            say("Note: untrained (random) weights; latency is meaningful, the pictures are not")
        }

        say("Checking sha256 of \(manifest.artifact.file)...")
        _ = try await Self.offMain { try manifest.verifyArtifact(in: folderURL) }
        say("sha256 OK (\(manifest.artifact.sha256.prefix(12))...)")

        let imageURLs = folder.imageURLs
        say(imageURLs.isEmpty ? "No images/*.png: timing one mid-grey tile only" : "\(imageURLs.count) image(s) in images/")
        let images = try await Self.offMain {
            try imageURLs.map { url in
                BenchmarkImage(name: BenchmarkFolder.imageName(url), image: try ImageConversion.loadImage(at: url))
            }
        }

        say("Loading the model...")
        let loaded = try await TileModelLoader.load(folder: folderURL, manifest: manifest, source: .documents,
                                                    computeUnits: units)
        say("Runtime: \(loaded.summary)")

        let benchmark = try DeviceBenchmark(manifest: manifest, configuration: configuration)
        say("\(configuration.warmup) warm-up and \(configuration.runs) timed runs on one tile...")
        let measurement = try await Self.measure(benchmark: benchmark, model: loaded.model, images: images) { fraction in
            Task { @MainActor [weak self] in self?.progress = fraction }
        }
        progress = 1
        let latency = measurement.latency
        say(String(format: "Per tile: median %.2f ms, p90 %.2f ms, min %.2f ms", latency.median, latency.p90, latency.min))
        for image in measurement.images {
            let milliseconds = String(format: "%.1f", image.latencyMs)
            say("\(image.name): \(image.height)x\(image.width), \(image.tiles) tiles, \(milliseconds) ms")
        }

        var notes = loaded.notes
        notes.append("timed: \(configuration.runs) forward passes of one tile (the first tile of the first image) after \(configuration.warmup) warm-up; images: one tiled restore each, including tile extraction and blending")
        notes.append(contentsOf: DeviceInfo.conditionNotes())
        notes.append("peak_memory_mb: largest phys_footprint sampled after each timed run (whole app)")
        if images.isEmpty {
            notes.append("no benchmark images: latency of a mid-grey tile only")
        }
        let record = ResultsWriter.deviceRecord(
            manifest: manifest, measurement: measurement, runtime: loaded.runtime, host: DeviceInfo.host(), notes: notes)
        let writer = ResultsWriter()
        let document = writer.document(records: [record])
        let output = folderURL.appendingPathComponent(Self.resultsFileName)
        try writer.write(document, to: output)
        return output
    }

    /// Runs the benchmark off the main actor; progress 0...1 over warm-up, timed runs and images.
    nonisolated static func measure(
        benchmark: DeviceBenchmark, model: TileModel, images: [BenchmarkImage],
        progress: @escaping @Sendable (Double) -> Void
    ) async throws -> BenchmarkMeasurement {
        let runs = Double(benchmark.configuration.runs)
        let imageCount = Double(images.count)
        let total = runs + imageCount
        return try benchmark.run(
            model: model, images: images, memorySample: { DeviceInfo.footprintMB() },
            progress: { phase in
                switch phase {
                case .warmup:
                    progress(0)
                case .timing(let done, _):
                    progress(Double(done) / total)
                case .image(_, let index, _):
                    progress((runs + Double(index)) / total)
                }
            })
    }

    nonisolated static func offMain<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await Task.detached(priority: .userInitiated) { try work() }.value
    }
}
