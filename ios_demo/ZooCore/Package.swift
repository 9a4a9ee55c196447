// swift-tools-version:5.9
// ZooCore: everything the iOS demo app does that can be tested without a device or a model
// runtime: the manifest (manifest.json) and its checks, artifact sha256, the tile plan of
// docs/tiling.md, tiled restoration through a `TileModel`, the benchmark and the results file.
// It depends on Foundation, CryptoKit and Dispatch only (no UIKit, no Core ML), so
// `swift test` runs it on a Mac without a simulator.
import PackageDescription

let package = Package(
    name: "ZooCore",
    platforms: [
        .iOS(.v17),
        .macOS(.v14),
    ],
    products: [
        .library(name: "ZooCore", targets: ["ZooCore"]),
    ],
    targets: [
        .target(
            name: "ZooCore",
            path: "Sources/ZooCore"
        ),
        .testTarget(
            name: "ZooCoreTests",
            dependencies: ["ZooCore"],
            path: "Tests/ZooCoreTests"
        ),
    ]
)
