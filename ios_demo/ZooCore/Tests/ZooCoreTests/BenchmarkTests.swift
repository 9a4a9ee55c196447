import XCTest
@testable import ZooCore

/// A clock that advances by the given steps (nanoseconds) on every call.
final class FakeClock {
    private var now: UInt64 = 1_000_000_000
    private var steps: [UInt64]
    private var index = 0

    init(steps: [UInt64]) { self.steps = steps }

    func read() -> UInt64 {
        let value = now
        now += steps[index % steps.count]
        index += 1
        return value
    }
}

final class BenchmarkTests: XCTestCase {
    /// The values were computed with numpy.percentile(..., method="linear") and numpy.median.
    func testPercentilesMatchNumpy() throws {
        let times = [6.1, 6.4, 7.3, 5.9, 6.0, 8.2, 6.6, 6.25]
        XCTAssertEqual(LatencyStatistics.percentile(times, 90), 7.569999999999999)
        XCTAssertEqual(LatencyStatistics.percentile(times, 50), 6.325)
        XCTAssertEqual(LatencyStatistics.percentile(Array(times.prefix(7)), 90), 7.66)
        XCTAssertEqual(LatencyStatistics.percentile([6.1], 90), 6.1)
        let summary = try LatencyStatistics.summarize(times)
        XCTAssertEqual(summary.median, 6.325)
        XCTAssertEqual(summary.p90, 7.569999999999999)
        XCTAssertEqual(summary.min, 5.9)
        XCTAssertEqual(summary.mean, 6.59375, accuracy: 1e-12)
        XCTAssertEqual(summary.runs, 8)
        XCTAssertThrowsError(try LatencyStatistics.summarize([]))
    }

    func testWarmupRunsAreNotTimed() throws {
        var calls = 0
        // Each run reads the clock twice: start (step 0 after it) ... end.
        let clock = FakeClock(steps: [2_000_000, 500_000])
        let times = try measureRuns(warmup: 3, runs: 4, clock: clock.read) { calls += 1 }
        XCTAssertEqual(calls, 7)
        XCTAssertEqual(times, [2.0, 2.0, 2.0, 2.0])
        XCTAssertThrowsError(try measureRuns(warmup: 0, runs: 0) {})
    }

    func testDeviceBenchmarkWithAnIdentityModel() throws {
        let manifest = try Manifest.decode(RepoFiles.data("tests/data/manifests/onnx-fp32-sr-x4.json"))
        // The SR golden manifest: tile 64, overlap 16, scale 4.
        let model = NearestModel(tile: 64, scale: 4)
        let images = [
            BenchmarkImage(name: "b", image: try patternImage(height: 70, width: 100)),
            BenchmarkImage(name: "a", image: try patternImage(height: 20, width: 20)),
        ]
        let benchmark = try DeviceBenchmark(manifest: manifest, configuration: BenchmarkConfiguration(runs: 5, warmup: 2))
        var phases: [BenchmarkPhase] = []
        let clock = FakeClock(steps: [3_000_000, 1_000_000])
        let measurement = try benchmark.run(model: model, images: images, clock: clock.read,
                                            memorySample: { 42.5 }, progress: { phases.append($0) })
        XCTAssertEqual(measurement.tile, 64)
        XCTAssertEqual(measurement.overlap, 16)
        XCTAssertEqual(measurement.tileTimesMs.count, 5)
        XCTAssertEqual(measurement.latency.median, 3.0)
        XCTAssertEqual(measurement.peakMemoryMB, 42.5)
        XCTAssertEqual(measurement.images.map(\.name), ["b", "a"])
        XCTAssertEqual(measurement.images[0].tiles, try benchmark.tiler.plan(height: 70, width: 100).numTiles)
        XCTAssertEqual(phases.first, .warmup(total: 2))
        XCTAssertTrue(phases.contains(.timing(done: 5, total: 5)))
        XCTAssertEqual(phases.last, .image(name: "a", index: 1, total: 2))
        // The output of the nearest model is the input upsampled: its hash is that image's hash.
        let upsampled = try Tiler(manifest: manifest).restore(images[1].image, with: NearestModel(tile: 64, scale: 4))
        XCTAssertEqual(measurement.images[1].outputSHA256, outputSHA256(upsampled))
        XCTAssertEqual(model.calls, 2 + 5 + measurement.images.map(\.tiles).reduce(0, +))
    }

    func testLaunchArguments() throws {
        let options = try LaunchOptions.parse(["/path/ZooDemo", "-NSDocumentRevisionsDebugMode", "YES",
                                               "-benchmark", "bench/", "-runs", "20", "-warmup", "0"])
        XCTAssertEqual(options, LaunchOptions(benchmarkFolder: "bench", runs: 20, warmup: 0))
        XCTAssertEqual(options.configuration, BenchmarkConfiguration(runs: 20, warmup: 0))
        XCTAssertEqual(try LaunchOptions.parse(["/path/ZooDemo"]), LaunchOptions())
        XCTAssertEqual(try LaunchOptions.parse(["/path/ZooDemo"]).configuration,
                       BenchmarkConfiguration(runs: BenchmarkConfiguration.defaultRuns, warmup: BenchmarkConfiguration.defaultWarmup))
        XCTAssertThrowsError(try LaunchOptions.parse(["app", "-benchmark"]))
        XCTAssertThrowsError(try LaunchOptions.parse(["app", "-benchmark", "../secret"]))
        XCTAssertThrowsError(try LaunchOptions.parse(["app", "-runs", "0"]))
        XCTAssertThrowsError(try LaunchOptions.parse(["app", "-warmup", "-1"]))
    }

    func testBenchmarkFolderListsPNGsInCodePointOrder() throws {
        let folder = try RepoFiles.temporaryFolder(self)
        let images = folder.appendingPathComponent("images", isDirectory: true)
        try FileManager.default.createDirectory(at: images, withIntermediateDirectories: true)
        for name in ["coffee.png", "Astronaut.png", "b.PNG", "notes.txt", ".hidden.png"] {
            try Data().write(to: images.appendingPathComponent(name))
        }
        try RepoFiles.data("tests/data/manifests/executorch-xnnpack-int8.json")
            .write(to: folder.appendingPathComponent("manifest.json"))
        let benchmarkFolder = try BenchmarkFolder(url: folder)
        XCTAssertEqual(benchmarkFolder.imageURLs.map(BenchmarkFolder.imageName), ["Astronaut", "b", "coffee"])
        XCTAssertEqual(benchmarkFolder.manifest.model.name, "hinet-lite")
    }
}
